--!include board_lib
-- The captain's whole plan in one call: each (task, agent) pair handed out as `assign` checks it, but
-- straight to `running` (the agent runs it on reading, with no `own start`: one script and one hop
-- fewer), and one assignment message per agent listing all its tasks (and carrying them whole, so the
-- agent need not read them), each with the agent's "working on" status.
-- One refused pair (claimed meanwhile, cancelled) does not stop the others.
-- ARGV[4]: leader epoch ('' = no leader check)  ARGV[5]: lease ms
-- ARGV[6]: the most bytes one assignment message may take (under the agents' message size limit)
-- ARGV[7..]: triples (task id, agent, agent instance ('' = any))
-- Reply: {"ok": true, "results": [{"id": ..., "token": n} or {"id": ..., "error": code, "message": ...}]}
local refused = before_assigning(5, ARGV[4]) or invalid_numbers(6, 'message bytes')
if refused then return refused end
local budget = tonumber(ARGV[6])
local results = {}
local agents, given = {}, {}  -- agents in first-seen order; agent -> {instance, tasks}
batch_begin()
for i = 7, #ARGV, 3 do
  local agent = ARGV[i + 1]
  local t, failed = assign_one(ARGV[i], agent, tonumber(ARGV[5]), false, 'running')
  if failed then
    results[#results + 1] = refusal(ARGV[i], failed)
  else
    results[#results + 1] = {id = ARGV[i], token = tonumber(t.token)}
    local mine = given[agent]
    if not mine then
      mine = {instance = ARGV[i + 2], tasks = {}}
      given[agent] = mine
      agents[#agents + 1] = agent
    end
    mine.tasks[#mine.tasks + 1] = t
  end
end
batch_end()
for _, agent in ipairs(agents) do
  send_assignments(agent, given[agent].instance, given[agent].tasks, 'running', '', true, budget)
end
return cjson.encode({ok = true, results = results})
