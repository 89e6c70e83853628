--!include board_lib
-- The captain (or a human) gives a task to an agent and writes the assignment to the agent's inbox
-- in the same step, so an assignment is never recorded without its message, nor sent without it.
-- ARGV[4]: task id  ARGV[5]: agent  ARGV[6]: agent instance ('' = any)  ARGV[7]: lease ms
-- ARGV[8]: leader epoch ('' = no leader check)  ARGV[9]: '1' to take it from a current owner
-- ARGV[10]: id of the assignment message
local _, bad0 = number_arg(7, 'lease ms')
if bad0 then return bad0 end
local id, agent, instance, lease_ms, epoch, force = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9]
if epoch ~= '' then
  local leader = redis.call('GET', key('captain:leader'))
  if not leader or string.match(leader, '^[^:]+') ~= epoch then
    return err('not_leader', 'captain epoch ' .. epoch .. ' no longer holds the leader lease; standing by')
  end
end
local t = load(id)
if not t then return not_found(id) end
promote_due()
local event = 'assigned'
if force == '1' and (t.state == 'assigned' or t.state == 'running') then
  if t.owner == agent then
    return err('illegal', 'task ' .. id .. ' is already ' .. t.state .. ' by ' .. agent)
  end
  event = 'reassigned'
elseif t.state ~= 'open' then
  local hint = ''
  if t.state == 'assigned' or t.state == 'running' then hint = '; use reassign to move it' end
  return err('illegal', 'task ' .. id .. ' is ' .. t.state .. (t.owner ~= '' and (' by ' .. t.owner) or '') ..
    ', not open' .. hint)
elseif redis.call('ZSCORE', key('ready'), id) == false then
  if tonumber(t.deps_left) > 0 then
    return err('not_ready', 'task ' .. id .. ' waits on ' .. t.deps_left .. ' unfinished blocked-by task(s)')
  end
  return err('not_ready', 'task ' .. id .. ' is backing off until ' .. t.not_before .. ' (ms) after a failure')
end
local previous = t.owner
hand_out(t, agent, lease_ms, 'assigned')
local detail = ''
if previous ~= '' then detail = 'from ' .. previous end
emit(t, event, detail)
local body = {task_id = id, token = tonumber(t.token), task_kind = t.kind, title = clip(t.title)}
if instance ~= '' then body.instance = instance end
local msg = cjson.encode({v = 1, id = ARGV[10], sender = 'board', to = agent, ts = NOW, priority = 'normal',
  kind = 'assignment', body = body})
redis.call('XADD', key('inbox:' .. agent), 'MAXLEN', '~', MAXLEN, '*', 'm', msg)
return ok(t)
