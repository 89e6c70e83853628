--!include board_lib
-- Remove finished tasks (done, failed, cancelled) and their history once they finished long enough
-- ago: what keeps Redis memory bounded however many tasks a swarm finishes.
-- ARGV[4]: remove tasks whose last change is at or before this time (ms)
-- ARGV[5]: the terminal states to purge, joined by ','  ARGV[6]: the most tasks to remove in this call
-- Reply: {"ok": true, "purged": <count>, "more": true|false}
local forbidden = check_caller('@captain')
if forbidden then return forbidden end
local bad = invalid_numbers(4, 'cutoff ms', 6, 'limit')
if bad then return bad end
local cutoff, limit = tonumber(ARGV[4]), tonumber(ARGV[6])
local purged, more = 0, false
for state in string.gmatch(ARGV[5], '[^,]+') do
  if not TERMINAL[state] then return err('invalid', 'only done, failed and cancelled tasks are purged, not ' .. state) end
end
batch_begin()
for state in string.gmatch(ARGV[5], '[^,]+') do
  -- Scored by creation time: a task finished at or before the cutoff was created before it too.
  local ids = redis.call('ZRANGEBYSCORE', key('state:', state), '-inf', cutoff, 'LIMIT', 0, limit - purged + 1)
  for _, id in ipairs(ids) do
    if purged >= limit then more = true break end
    local fields = redis.call('HMGET', key('task:', id), 'updated', 'key')
    if tonumber(fields[1] or '0') <= cutoff then
      if fields[2] and fields[2] ~= '' and redis.call('HGET', key('dedup'), fields[2]) == id then
        redis.call('HDEL', key('dedup'), fields[2])
      end
      redis.call('DEL', key('task:', id), key('history:', id), key('dependents:', id))
      index('ZREM', key('state:', state), id)
      index('ZREM', key('tasks'), id)
      purged = purged + 1
    end
  end
end
batch_end()
return cjson.encode({ok = true, purged = purged, more = more})
