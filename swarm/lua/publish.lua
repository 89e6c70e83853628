-- Append a batch of messages in one round trip.
-- KEYS: the distinct target streams (all in the swarm's hash slot).
-- Keys in KEYS, not built from a prefix like the board scripts' (board_lib's `key`): the caller knows
-- every stream before the call (swarm/keys.py `stream_for`), and a script that does declares its keys.
-- ARGV[1]: approximate MAXLEN; then pairs (1-based index into KEYS, message JSON).
-- Returns the new entry ids, in order.
local maxlen = ARGV[1]
local ids = {}
for i = 2, #ARGV, 2 do
  ids[#ids + 1] = redis.call('XADD', KEYS[tonumber(ARGV[i])], 'MAXLEN', '~', maxlen, '*', 'm', ARGV[i + 1])
end
return ids
