--!include board_lib
-- What the captain or a human does to a task without owning it:
--   cancel   any non-terminal state -> cancelled (a current owner's token is fenced off)
--   unblock  blocked -> open
--   retry    failed or cancelled -> open again: attempts from 0, a new token, the history kept
--   edit     change priority, title, body or caps of a task that is not running yet (open, blocked
--            or assigned): ARGV[6] is a JSON object of the fields to change
-- ARGV[4]: action  ARGV[5]: task id  ARGV[6]: reason, note, or the fields (edit)
local forbidden = check_caller('@captain')
if forbidden then return forbidden end
local action, id, reason = ARGV[4], ARGV[5], ARGV[6]
local t = load(id)
if not t then return not_found(id) end
if action == 'retry' then
  if t.state ~= 'failed' and t.state ~= 'cancelled' then
    return err('illegal', 'task ' .. id .. ' is ' .. t.state .. '; only a failed or cancelled task can be retried')
  end
  unlink(t)
  t.owner, t.attempts, t.not_before, t.lease_until = '', '0', '0', '0'
  t.token = tostring(tonumber(t.token) + 1)
  set_state(t, 'open')
  save(t, 'owner', 'attempts', 'not_before', 'lease_until', 'token', 'state')
  make_ready(t)
  emit(t, 'retried', reason)
  return ok(t)
end
if TERMINAL[t.state] then
  return err('illegal', 'task ' .. id .. ' is ' .. t.state .. ', a terminal state; it never changes again')
end
if action == 'cancel' then
  revoke(t, 'cancelled', reason)
elseif action == 'unblock' then
  if t.state ~= 'blocked' then return err('illegal', 'task ' .. id .. ' is ' .. t.state .. ', not blocked') end
  t.not_before = '0'
  set_state(t, 'open')
  save(t, 'state', 'not_before')
  make_ready(t)
  emit(t, 'unblocked', reason)
elseif action == 'edit' then
  if t.state == 'running' then
    return err('illegal', 'task ' .. id .. ' is running; edit a task before it runs (or cancel it)')
  end
  local ok_json, fields = pcall(cjson.decode, reason)
  if not ok_json or type(fields) ~= 'table' then return err('invalid', 'the fields to edit are not a JSON object') end
  local changed = {}
  for _, name in ipairs({'title', 'body', 'caps'}) do
    local v = fields[name]
    if v ~= nil then
      if type(v) ~= 'string' or (name ~= 'body' and v == '') then
        return err('invalid', 'task field ' .. name .. ' must be a ' .. (name == 'body' and '' or 'non-empty ') .. 'string')
      end
      changed[#changed + 1] = name
    end
  end
  local priority = fields.priority
  if priority ~= nil then
    if type(priority) ~= 'number' or priority ~= math.floor(priority) or priority < 0 or priority > 9 then
      return err('invalid', 'task field priority must be a whole number from 0 to 9')
    end
    changed[#changed + 1] = 'priority'
  end
  if #changed == 0 then return err('invalid', 'nothing to edit: give priority, title, body or caps') end
  local queued = t.state == 'open' and redis.call('ZSCORE', key('ready'), id)
  for _, name in ipairs(changed) do t[name] = tostring(fields[name]) end
  save(t, unpack(changed))
  if queued then redis.call('ZADD', key('ready'), score(t), id) end  -- the new priority's place in line
  emit(t, 'edited', table.concat(changed, ', '))
else
  return err('illegal', 'unknown action ' .. action)
end
return ok(t)
