--!include board_lib
-- An agent takes the best ready task it is capable of: highest priority, then oldest. Atomic, so
-- concurrent claimers never get the same task. The task goes straight to `running`. Expired leases
-- are reclaimed first, so shell agents keep a board healthy even with no captain running.
-- ARGV[4]: agent  ARGV[5]: comma-separated capabilities ('*' = any)  ARGV[6]: lease ms
local agent, lease_ms = ARGV[4], tonumber(ARGV[6])
local can, any = {}, false
for cap in string.gmatch(ARGV[5], '[^,]+') do
  if cap == '*' then any = true end
  can[cap] = true
end
reclaim_expired(100)
local offset = 0
while true do
  local ids = redis.call('ZRANGE', key('ready'), offset, offset + 99)
  if #ids == 0 then return cjson.encode({ok = true, empty = true}) end
  for _, id in ipairs(ids) do
    local t = load(id)
    local fits = any
    if not fits then
      fits = true
      for cap in string.gmatch(t.caps, '[^,]+') do
        if not can[cap] then fits = false break end
      end
    end
    if fits then
      hand_out(t, agent, lease_ms, 'running')
      emit(t, 'claimed', '')
      return ok(t)
    end
  end
  offset = offset + 100
end
