--!include board_lib
-- The captain's look at the board, in one round trip: reclaim expired leases, then return what
-- assigning needs: the next ready tasks (claim order), every registered agent with its card, last
-- heartbeat and load, and for each agent the files of those tasks it has affinity for.
-- ARGV[4]: offset into the ready queue  ARGV[5]: most tasks to return  ARGV[6]: most leases to reclaim
local moved = reclaim_expired(tonumber(ARGV[6]))
local out = {ok = true, moved = moved, tasks = {}, agents = {}}
local next_expiry = redis.call('ZRANGE', key('leases'), 0, 0, 'WITHSCORES')
local next_delayed = redis.call('ZRANGE', key('delayed'), 0, 0, 'WITHSCORES')
if #next_expiry > 0 then out.next_expiry = tonumber(next_expiry[2]) end
if #next_delayed > 0 then out.next_ready = tonumber(next_delayed[2]) end
local offset = tonumber(ARGV[4])
local files = {}
for _, id in ipairs(redis.call('ZRANGE', key('ready'), offset, offset + tonumber(ARGV[5]) - 1)) do
  local t = load(id)
  if t then
    out.tasks[#out.tasks + 1] = t
    for file in string.gmatch(t.files, '[^\n]+') do files[file] = true end
  end
end
local seen = {}
local rows = redis.call('ZRANGE', key('agents:seen'), 0, -1, 'WITHSCORES')
for i = 1, #rows, 2 do seen[rows[i]] = tonumber(rows[i + 1]) end
local cards = redis.call('HGETALL', key('agents'))
for i = 1, #cards, 2 do
  local name = cards[i]
  local agent = {name = name, card = cards[i + 1], seen = seen[name] or 0,
    load = redis.call('SCARD', key('owned:' .. name)), affinity = {}}
  for file in pairs(files) do
    if redis.call('SISMEMBER', key('affinity:' .. name), file) == 1 then
      agent.affinity[#agent.affinity + 1] = file
    end
  end
  out.agents[#out.agents + 1] = agent
end
return cjson.encode(out)
