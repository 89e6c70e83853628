--!include board_lib
-- Tasks whose lease ran out go back to open (their token fenced off) or, past max_attempts, to
-- failed. Returns the ids it moved and the next lease expiry (ms), so the captain can sleep until then.
-- ARGV[4]: most tasks to move in this call
return cjson.encode(reclaim_round(tonumber(ARGV[4])))
