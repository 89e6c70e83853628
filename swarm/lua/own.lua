--!include board_lib
-- What an owner does with its task, fenced by its token:
--   start      assigned -> running
--   heartbeat  extend the lease (no event: not a transition)
--   done       -> done with a result; dependents may become ready
--   fail       -> open again after a backoff, or failed past max_attempts
--   release    -> open again now, the attempt not counted (graceful shutdown)
--   block      -> blocked with a reason (unblock puts it back to open)
-- ARGV[4]: action  ARGV[5]: task id  ARGV[6]: token  ARGV[7]: lease ms  ARGV[8]: result or reason
-- ARGV[9]: retry backoff base ms  ARGV[10]: '0' to fail without retry
-- ARGV[11]: '1' to write the owner's status message (working on / done / failed) on the bus
-- ARGV[12]: the owner's agent name: with a valid token, anyone else is refused all the same
-- (A busy agent reports done and claims its next tasks in one call with settle.lua instead.)
local bad = invalid_numbers(7, 'lease ms')
if bad then return bad end
local action, id, token, lease_ms, text = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local speak = ARGV[11] == '1'
local forbidden = check_caller(ARGV[12] or '')
if forbidden then return forbidden end
local t = load(id)
if not t then return not_found(id) end
local refused = check_owner(t, token, ARGV[12] or '')
if refused then return refused end
if action == 'start' then
  local failed = start_one(t, lease_ms)
  if failed then return failed end
  if speak then say_tasks(t.owner, 'working', 'working on', {t}) end
elseif action == 'heartbeat' then
  set_lease(t, NOW + lease_ms)
  save(t, 'lease_until')
elseif action == 'done' then
  complete(t, text)
  if speak then say_tasks(t.owner, 'done', 'done', {t}) end
elseif action == 'fail' then
  t.reason = text
  save(t, 'reason')
  if speak then say(t.owner, 'error', 'failed ' .. t.id .. ': ' .. text, t.id) end
  if ARGV[10] ~= '0' and tonumber(t.attempts) < tonumber(t.max_attempts) then
    local backoff = math.min(tonumber(ARGV[9]) * 2 ^ (tonumber(t.attempts) - 1), 60000)
    requeue(t, NOW + backoff)
    emit(t, 'retry', text)
  else
    finish(t, 'failed', 'reason', text, 'failed')
  end
elseif action == 'release' then
  t.attempts = tostring(math.max(0, tonumber(t.attempts) - 1))
  save(t, 'attempts')
  requeue(t, 0)
  emit(t, 'released', text)
elseif action == 'block' then
  disown(t, 'blocked', 'reason', text)
  emit(t, 'blocked', text)
else
  return err('illegal', 'unknown owner action ' .. action)
end
return ok(t)
