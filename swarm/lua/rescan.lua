--!include board_lib
-- The end of one work source's rescan (swarm/discovery/engine.py), in one step: the tasks whose
-- findings changed are refreshed, the tasks whose findings are gone are closed as obsolete, and the
-- source's index of what it found is rewritten. A crash can come before or after this call, never
-- between its parts: a cancelled task whose dedup key still named it would keep a finding that comes
-- back from ever getting a new task.
-- ARGV[4]: the source's name; its index is key('discovery:tasks:', name)
-- ARGV[5]: a JSON object:
--   found     {task key: task id} of everything the rescan reported: the new index
--   refresh   [{id, key, title, body, priority, files, evidence}]: tasks whose findings changed. A task
--             that is not terminal and still has that key gets the new title, body, priority and files
--             (`files` joined by "\n") and the new evidence ids (joined by ","; added to its own, at
--             most 64 in all); event `refreshed`, detail: the fields that changed. Unchanged: nothing.
--   obsolete  [[task key, task id]]: tasks the source no longer reports. One not terminal is cancelled
--             with `reason` (event `cancelled`); the dedup key is deleted when it still names a task
--             closed this way (now, or by an earlier rescan), so a finding that comes back makes a new
--             task. A task that finished (done, failed, cancelled by someone) keeps its key: its history stands.
--   reason    the cancel reason; it starts `obsolete: `
--   forget    [source name]: older names of the source whose index goes too (renamed sources)
-- Reply: {"ok": true, "refreshed": [task id], "obsolete": [task id]}: the tasks it changed.
local ok_json, scan = pcall(cjson.decode, ARGV[5])
if not ok_json or type(scan) ~= 'table' or type(scan.reason) ~= 'string' then
  return err('invalid', 'the rescan is not a JSON object with a reason')
end
local OBSOLETE = 'obsolete: '
local MAX_EVIDENCE = 64
local refreshed, closed = {}, {}

local function merged_evidence(old, new)
  local out, seen = {}, {}
  for _, list in ipairs({old, new}) do
    for id in string.gmatch(list or '', '[^,]+') do
      if not seen[id] and #out < MAX_EVIDENCE then
        seen[id] = true
        out[#out + 1] = id
      end
    end
  end
  return table.concat(out, ',')
end

batch_begin()
for _, r in ipairs(scan.refresh or {}) do
  local t = load(r.id)
  if t and not TERMINAL[t.state] and t.key == r.key then
    local changed = {}
    for _, name in ipairs({'title', 'body', 'priority', 'files'}) do
      local v = tostring(r[name])
      if t[name] ~= v then
        t[name] = v
        changed[#changed + 1] = name
      end
    end
    if #changed > 0 then
      t.evidence = merged_evidence(t.evidence, r.evidence)
      save(t, 'evidence', unpack(changed))
      if t.state == 'open' and redis.call('ZSCORE', key('ready'), t.id) then
        index('ZADD', key('ready'), score(t), t.id)  -- a new priority's place in line
      end
      emit(t, 'refreshed', table.concat(changed, ', '))
      refreshed[#refreshed + 1] = t.id
    end
  end
end
for _, pair in ipairs(scan.obsolete or {}) do
  local task_key, id = pair[1], pair[2]
  local t = load(id)
  if t and not TERMINAL[t.state] then
    revoke(t, 'cancelled', scan.reason)
    closed[#closed + 1] = id
  end
  if t and t.state == 'cancelled' and string.sub(t.reason or '', 1, #OBSOLETE) == OBSOLETE
      and redis.call('HGET', key('dedup'), task_key) == id then
    redis.call('HDEL', key('dedup'), task_key)
  end
end
batch_end()

redis.call('DEL', key('discovery:tasks:', ARGV[4]))
for _, name in ipairs(scan.forget or {}) do redis.call('DEL', key('discovery:tasks:', name)) end
local pairs_ = {}
for task_key, id in pairs(scan.found or {}) do
  pairs_[#pairs_ + 1] = task_key
  pairs_[#pairs_ + 1] = id
end
if #pairs_ > 0 then
  for i = 1, #pairs_, 4000 do
    redis.call('HSET', key('discovery:tasks:', ARGV[4]), unpack(pairs_, i, math.min(#pairs_, i + 3999)))
  end
end
return cjson.encode({ok = true, refreshed = refreshed, obsolete = closed})
