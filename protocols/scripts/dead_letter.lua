-- Move one stream entry to the dead-letter stream and ack it, atomically, so it is never both
-- pending and dead-lettered, nor neither.
-- KEYS[1]: source stream; KEYS[2]: dead-letter stream.
-- Keys in KEYS, not built from a prefix like the board scripts' (board_lib's `key`): the source is
-- whatever stream the caller reads, and both are known before the call (names from swarm/keys.py).
-- ARGV: group, entry id, reason, consumer, dead-letter MAXLEN, now (ms)[, raw bytes kept (4096)].
-- A dead letter keeps only the first bytes of the entry (`size` says how many it had, `truncated`
-- whether some were cut): a flood of oversize junk must not fill memory with copies of itself.
local entry = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local raw = ''
if #entry == 1 then
  local fields = entry[1][2]
  if #fields == 2 and fields[1] == 'm' then
    raw = fields[2]
  else
    raw = cjson.encode(fields)
  end
end
local keep = tonumber(ARGV[7] or '4096')
local size = #raw
local truncated = '0'
if size > keep then
  raw = string.sub(raw, 1, keep)
  truncated = '1'
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[5], '*',
  'stream', KEYS[1], 'entry', ARGV[2], 'group', ARGV[1], 'consumer', ARGV[4],
  'reason', ARGV[3], 'at', ARGV[6], 'size', tostring(size), 'truncated', truncated, 'raw', raw)
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return id
