--!include board_lib
-- An agent starts every assignment it received since its last call, each fenced by its own token;
-- one refused (stale, already running, another's) does not stop the others.
-- ARGV[4]: agent  ARGV[5]: lease ms  ARGV[6]: '1' to write the agent's "working on" status
-- ARGV[7..]: pairs (task id, token)
-- Reply: {"ok": true, "results": [{"id": ..., "task": {...}} or {"id": ..., "error": code, "message": ...}]}
local forbidden = check_caller(ARGV[4])
if forbidden then return forbidden end
local bad = invalid_numbers(5, 'lease ms')
if bad then return bad end
local agent, lease_ms, speak = ARGV[4], tonumber(ARGV[5]), ARGV[6] == '1'
local started = {}
local results = for_owned(7, 2, agent, load, function(t)
  local failed = start_one(t, lease_ms)
  if failed then return refusal(t.id, failed) end
  started[#started + 1] = t
  return {id = t.id, task = t}
end)
if speak then say_tasks(agent, 'working', 'working on', started) end
return cjson.encode({ok = true, results = results})
