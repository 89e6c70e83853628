--!include board_lib
-- An agent's heartbeat for every task it holds, in one call: each lease extended, fenced by its own
-- token; one refused (stale, no longer assigned or running, another's) does not stop the others.
-- No event: a renewal is not a transition.
-- ARGV[4]: agent  ARGV[5]: lease ms  ARGV[6..]: pairs (task id, token)
-- Reply: {"ok": true, "results": [{"id": ..., "lease_until": ms} or {"id": ..., "error": code, "message": ...}]}
local forbidden = check_caller(ARGV[4])
if forbidden then return forbidden end
local bad = invalid_numbers(5, 'lease ms')
if bad then return bad end
local until_ms = NOW + tonumber(ARGV[5])
local results = for_owned(6, 2, ARGV[4], load_for_report, function(t)
  set_lease(t, until_ms)
  save(t, 'lease_until')
  return {id = t.id, lease_until = until_ms}
end)
return cjson.encode({ok = true, results = results})
