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
  local id = ARGV[i]
  local t = load(id)
  local refused = nil
  if not t then
    refused = not_found(id)
  else
    refused = check_owner(t, ARGV[i + 1])
    if not refused and t.owner ~= agent then
      refused = err('illegal', 'task ' .. id .. ' is owned by ' .. t.owner .. ', not ' .. agent)
    end
    if not refused then refused = start_one(t, lease_ms) end
  end
  if refused then
    local e = cjson.decode(refused)
    results[#results + 1] = {id = id, error = e.error, message = e.message}
  else
    results[#results + 1] = {id = id, task = t}
    started[#started + 1] = t
  end
end
batch_end()
if speak then say_tasks(agent, 'working', 'working on', started) end
return cjson.encode({ok = true, results = results})
