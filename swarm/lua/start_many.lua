--!include board_lib
-- An agent starts every assignment it received since its last call, each fenced by its own token;
-- one refused (stale, already running, another's) does not stop the others.
-- ARGV[4]: agent  ARGV[5]: lease ms  ARGV[6]: '1' to write the agent's "working on" status
-- ARGV[7..]: pairs (task id, token)
-- Reply: {"ok": true, "results": [{"id": ..., "task": {...}} or {"id": ..., "error": code, "message": ...}]}
local _, bad0 = number_arg(5, 'lease ms')
if bad0 then return bad0 end
local agent, lease_ms, speak = ARGV[4], tonumber(ARGV[5]), ARGV[6] == '1'
local results, started = {}, {}
batch_begin()
for i = 7, #ARGV, 2 do
  local t, refused = owned_task(ARGV[i], ARGV[i + 1], agent, load)
  if t then
    local failed = start_one(t, lease_ms)
    if failed then refused = refusal(t.id, failed) end
  end
  if refused then
    results[#results + 1] = refused
  else
    results[#results + 1] = {id = t.id, task = t}
    started[#started + 1] = t
  end
end
batch_end()
if speak then say_tasks(agent, 'working', 'working on', started) end
return cjson.encode({ok = true, results = results})
