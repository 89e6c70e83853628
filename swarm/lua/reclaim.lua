--!include board_lib
-- Tasks whose lease ran out go back to open (their token fenced off) or, past max_attempts, to
-- failed. Returns the ids it moved and the next lease expiry (ms), so the captain can sleep until then.
-- ARGV[4]: most tasks to move in this call
local expired = redis.call('ZRANGEBYSCORE', key('leases'), '-inf', NOW, 'LIMIT', 0, tonumber(ARGV[4]))
local moved = {}
for _, id in ipairs(expired) do
  local t = load(id)
  if not t or TERMINAL[t.state] then
    redis.call('ZREM', key('leases'), id)
  else
    local owner = t.owner
    if tonumber(t.attempts) >= tonumber(t.max_attempts) then
      t.token = tostring(tonumber(t.token) + 1)
      save(t, 'token')
      finish(t, 'failed', 'reason', 'lease of ' .. owner .. ' expired on attempt ' .. t.attempts .. ' of ' ..
        t.max_attempts, 'failed')
    else
      requeue(t, 0)
      emit(t, 'expired', 'lease of ' .. owner .. ' expired')
    end
    moved[#moved + 1] = id
  end
end
promote_due()
local next_expiry = redis.call('ZRANGE', key('leases'), 0, 0, 'WITHSCORES')
local next_delayed = redis.call('ZRANGE', key('delayed'), 0, 0, 'WITHSCORES')
local out = {ok = true, moved = moved}
if #next_expiry > 0 then out.next_expiry = tonumber(next_expiry[2]) end
if #next_delayed > 0 then out.next_ready = tonumber(next_delayed[2]) end
return cjson.encode(out)
