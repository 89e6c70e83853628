--!include board_lib
-- An agent's heartbeat for every task it holds, in one call: each lease extended, fenced by its own
-- token; one refused (stale, no longer assigned or running, another's) does not stop the others.
-- No event: a renewal is not a transition.
-- ARGV[4]: agent  ARGV[5]: lease ms  ARGV[6..]: pairs (task id, token)
-- Reply: {"ok": true, "results": [{"id": ..., "lease_until": ms} or {"id": ..., "error": code, "message": ...}]}
local _, bad0 = number_arg(5, 'lease ms')
if bad0 then return bad0 end
local agent, until_ms = ARGV[4], NOW + tonumber(ARGV[5])
local results = {}
batch_begin()
for i = 6, #ARGV, 2 do
  local t, refused = owned_task(ARGV[i], ARGV[i + 1], agent, load_for_report)
  if refused then
    results[#results + 1] = refused
  else
    t.lease_until = tostring(until_ms)
    index('ZADD', key('leases'), until_ms, t.id)
    save(t, 'lease_until')
    results[#results + 1] = {id = t.id, lease_until = until_ms}
  end
end
batch_end()
return cjson.encode({ok = true, results = results})
