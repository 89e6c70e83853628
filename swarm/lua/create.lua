--!include board_lib
-- Create a task, idempotently: a second create with the same dedup key returns the first task.
-- ARGV[4]: JSON spec {kind, title, body, priority, key, evidence, deps, caps, files, max_attempts};
-- kind and title are required, the rest default (priority 5, max_attempts 3, caps = kind).
local ok_json, spec = pcall(cjson.decode, ARGV[4])
if not ok_json or type(spec) ~= 'table' then return err('invalid', 'the task spec is not a JSON object') end
-- Check every field before the first write: a script that fails halfway leaves its writes behind.
local function text_field(name, required)
  local v = spec[name]
  if v == nil then v = '' end
  if type(v) ~= 'string' or (required and v == '') then
    return nil, err('invalid', 'task field ' .. name .. ' must be ' .. (required and 'a non-empty string' or 'a string'))
  end
  spec[name] = v
  return v
end
for _, f in ipairs({{'kind', true}, {'title', true}, {'body', false}, {'key', false}, {'evidence', false},
                    {'caps', false}, {'files', false}}) do
  local _, bad = text_field(f[1], f[2])
  if bad then return bad end
end
local function int_field(name, default, lo, hi)
  local v = spec[name]
  if v == nil then v = default end
  if type(v) ~= 'number' or v ~= math.floor(v) or v < lo or v > hi then
    return err('invalid', 'task field ' .. name .. ' must be a whole number from ' .. lo .. ' to ' .. hi)
  end
  spec[name] = v
  return nil
end
local bad = int_field('priority', 5, 0, 9) or int_field('max_attempts', 3, 1, 100)
if bad then return bad end
if spec.caps == '' then spec.caps = spec.kind end
if spec.deps == nil then spec.deps = {} end
if type(spec.deps) ~= 'table' then return err('invalid', 'task field deps must be an array of task ids') end
for _, dep in ipairs(spec.deps) do
  if type(dep) ~= 'string' then return err('invalid', 'task field deps must be an array of task ids') end
end
if spec.key ~= '' then
  local existing = redis.call('HGET', key('dedup'), spec.key)
  if existing then return ok(load(existing), {created = false}) end
end
-- A dependency named twice counts once: its completion releases this task only once.
local deps, seen, deps_left = {}, {}, 0
for _, dep in ipairs(spec.deps) do
  if not seen[dep] then
    seen[dep] = true
    deps[#deps + 1] = dep
    local d = load(dep)
    if not d then
      return err('not_found', 'blocked-by task ' .. dep .. ' does not exist; create it first or drop it')
    end
    if d.state ~= 'done' then deps_left = deps_left + 1 end
  end
end
local id = 't-' .. redis.call('INCR', key('seq'))
local t = {id = id, kind = spec.kind, title = spec.title, body = spec.body, priority = tostring(spec.priority),
  key = spec.key, evidence = spec.evidence, deps = table.concat(deps, ','), caps = spec.caps, files = spec.files,
  state = 'open', owner = '', token = '0', attempts = '0', max_attempts = tostring(spec.max_attempts),
  lease_until = '0', not_before = '0', deps_left = tostring(deps_left), created = tostring(NOW),
  result = '', reason = ''}
save(t, 'id', 'kind', 'title', 'body', 'priority', 'key', 'evidence', 'deps', 'caps', 'files', 'state', 'owner',
  'token', 'attempts', 'max_attempts', 'lease_until', 'not_before', 'deps_left', 'created', 'result', 'reason')
redis.call('ZADD', key('state:', 'open'), NOW, id)
redis.call('ZADD', key('tasks'), NOW, id)
if spec.key ~= '' then redis.call('HSET', key('dedup'), spec.key, id) end
for _, dep in ipairs(deps) do redis.call('SADD', key('dependents:', dep), id) end
make_ready(t)
emit(t, 'created', t.title)
return ok(t, {created = true})
