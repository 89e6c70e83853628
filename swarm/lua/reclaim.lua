--!include board_lib
-- Tasks whose lease ran out go back to open (their token fenced off) or, past max_attempts, to
-- failed. Returns the ids it moved and the next lease expiry (ms), so the captain can sleep until then.
-- ARGV[4]: most tasks to move in this call
local moved = reclaim_expired(tonumber(ARGV[4]))
local next_expiry = redis.call('ZRANGE', key('leases'), 0, 0, 'WITHSCORES')
local next_delayed = redis.call('ZRANGE', key('delayed'), 0, 0, 'WITHSCORES')
local out = {ok = true, moved = moved}
if #next_expiry > 0 then out.next_expiry = tonumber(next_expiry[2]) end
if #next_delayed > 0 then out.next_ready = tonumber(next_delayed[2]) end
return cjson.encode(out)
