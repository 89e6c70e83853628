-- The captain's leader lease. One call both acquires and renews:
--   no leader          -> take the lease with a new epoch (INCR), return the epoch
--   we are the leader  -> extend the lease, return our epoch
--   someone else leads -> return 0 (stand by)
--   ARGV[2] = 'release' -> give the lease up if it is ours, return 0
-- KEYS[1]: leader key  KEYS[2]: epoch counter  ARGV[1]: instance id  ARGV[2]: lease ms or 'release'
-- Keys in KEYS, not built from a prefix like the board scripts' (board_lib's `key`): both are known
-- before the call (swarm/keys.py `leader`, `epoch`), and PROTOCOL.md 7.9 gives other clients this form.
local current = redis.call('GET', KEYS[1])
if ARGV[2] == 'release' then
  if current and string.match(current, ':(.*)$') == ARGV[1] then redis.call('DEL', KEYS[1]) end
  return 0
end
if current then
  local epoch, holder = string.match(current, '^(%d+):(.*)$')
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return tonumber(epoch)
  end
  return 0
end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], epoch .. ':' .. ARGV[1], 'PX', ARGV[2])
return epoch
