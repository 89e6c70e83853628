--!include board_lib
-- A busy agent's round trip: report every task it finished since its last call as done, then claim
-- up to `count` ready tasks for the slots that freed (first those the board handed it, as claim.lua
-- does; a wait for a hand-off goes on for the slots still free). Each report is fenced by its own
-- token; one refused (stale, or no longer running) does not stop the others.
-- ARGV[4]: agent  ARGV[5]: capabilities ('*' = any)  ARGV[6]: lease ms  ARGV[7]: tasks to claim
-- ARGV[8]: '1' to write the agent's status messages  ARGV[9..]: triples (task id, token, result)
-- Reply: {"ok": true, "done": [{"id": ..., "updated": ms} or {"id": ..., "error": code, "message": ...}],
--         "tasks": [claimed tasks], "tip": events id when it claimed fewer than asked}
local forbidden = check_caller(ARGV[4])
if forbidden then return forbidden end
local bad = invalid_numbers(6, 'lease ms', 7, 'count')
if bad then return bad end
local agent, speak = ARGV[4], ARGV[8] == '1'
local completed = {}
local done = for_owned(9, 3, agent, load_for_report, function(t, i)
  complete(t, ARGV[i + 2])
  completed[#completed + 1] = t
  return {id = t.id, updated = tonumber(t.updated)}
end)
if speak then say_tasks(agent, 'done', 'done', completed) end
local claimed, tip, stopped = {}, nil, nil
if tonumber(ARGV[7]) > 0 then
  claimed, tip, stopped = take_work(agent, ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), speak, 0)
end
return cjson.encode({ok = true, done = done, tasks = claimed, tip = tip, budget = stopped})
