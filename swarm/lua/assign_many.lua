--!include board_lib
-- The captain's whole plan in one call: each (task, agent) pair assigned as `assign` does, with its
-- assignment message; one refused pair (claimed meanwhile, cancelled) does not stop the others.
-- ARGV[4]: leader epoch ('' = no leader check)  ARGV[5]: lease ms
-- ARGV[6..]: quadruples (task id, agent, agent instance ('' = any), id of the assignment message)
-- Reply: {"ok": true, "results": [{"id": ..., "token": n} or {"id": ..., "error": code, "message": ...}]}
local refused = before_assigning(5, ARGV[4])
if refused then return refused end
local results = {}
for i = 6, #ARGV, 4 do
  local t, failed = assign_one(ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[5]), false, ARGV[i + 3])
  if failed then
    results[#results + 1] = refusal(ARGV[i], failed)
  else
    results[#results + 1] = {id = ARGV[i], token = tonumber(t.token)}
  end
end
return cjson.encode({ok = true, results = results})
