--!include board_lib
-- The captain (or a human) gives a task to an agent and writes the assignment to the agent's inbox
-- in the same step, so an assignment is never recorded without its message, nor sent without it.
-- The task is `assigned`: the agent accepts it with `own start`.
-- ARGV[4]: task id  ARGV[5]: agent  ARGV[6]: agent instance ('' = any)  ARGV[7]: lease ms
-- ARGV[8]: leader epoch ('' = no leader check)  ARGV[9]: '1' to take it from a current owner
-- ARGV[10]: id of the assignment message
local refused = before_assigning(7, ARGV[8])
if refused then return refused end
local t, failed = assign_one(ARGV[4], ARGV[5], tonumber(ARGV[7]), ARGV[9] == '1', 'assigned')
if failed then return failed end
send_assignments(ARGV[5], ARGV[6], {t}, 'assigned', ARGV[10], false, 0)
return ok(t)
