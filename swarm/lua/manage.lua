--!include board_lib
-- What the captain or a human does to a task without owning it:
--   cancel   any non-terminal state -> cancelled (a current owner's token is fenced off)
--   unblock  blocked -> open
-- ARGV[4]: action  ARGV[5]: task id  ARGV[6]: reason
local action, id, reason = ARGV[4], ARGV[5], ARGV[6]
local t = load(id)
if not t then return not_found(id) end
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
else
  return err('illegal', 'unknown action ' .. action)
end
return ok(t)
