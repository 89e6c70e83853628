--!include board_lib
-- The captain's look at the board, in one round trip: reclaim expired leases, then return what
-- assigning needs: every registered agent with its card, last heartbeat and load; as many of the
-- next ready tasks (claim order) as the live agents' free slots could take (with some to spare, for
-- tasks no free agent fits); and for each agent the files of those tasks it has affinity for.
-- ARGV[4]: offset into the ready queue  ARGV[5]: most tasks to return  ARGV[6]: most leases to reclaim
-- ARGV[7]: an agent heard from within this many ms counts as live
local _, bad0 = number_arg(4, 'offset')
if bad0 then return bad0 end
local _, bad1 = number_arg(5, 'count')
if bad1 then return bad1 end
local _, bad2 = number_arg(6, 'reclaim limit')
if bad2 then return bad2 end
local _, bad3 = number_arg(7, 'live window ms')
if bad3 then return bad3 end
local moved = reclaim_expired(tonumber(ARGV[6]))
local out = {ok = true, moved = moved, tasks = {}, agents = {}}
local next_expiry = redis.call('ZRANGE', key('leases'), 0, 0, 'WITHSCORES')
local next_delayed = redis.call('ZRANGE', key('delayed'), 0, 0, 'WITHSCORES')
if #next_expiry > 0 then out.next_expiry = tonumber(next_expiry[2]) end
if #next_delayed > 0 then out.next_ready = tonumber(next_delayed[2]) end

local seen = {}
local rows = redis.call('ZRANGE', key('agents:seen'), 0, -1, 'WITHSCORES')
for i = 1, #rows, 2 do seen[rows[i]] = tonumber(rows[i + 1]) end
local live_since = NOW - tonumber(ARGV[7])
local free = 0
local cards = redis.call('HGETALL', key('agents'))
for i = 1, #cards, 2 do
  local name = cards[i]
  local agent = {name = name, card = cards[i + 1], seen = seen[name] or 0,
    load = redis.call('SCARD', key('owned:' .. name)), affinity = {}}
  if agent.seen > 0 and agent.seen >= live_since then
    local ok_card, card = pcall(cjson.decode, agent.card)
    if ok_card and type(card) == 'table' and type(card.concurrency) == 'number' then
      free = free + math.max(0, card.concurrency - agent.load)
    end
  end
  out.agents[#out.agents + 1] = agent
end

local want = math.min(tonumber(ARGV[5]), free * 4 + 16)
if free == 0 then want = 0 end
local offset = tonumber(ARGV[4])
local files = {}
local any_file = false
if want > 0 then
  for _, id in ipairs(redis.call('ZRANGE', key('ready'), offset, offset + want - 1)) do
    local t = load(id)
    if t then
      out.tasks[#out.tasks + 1] = t
      for file in string.gmatch(t.files, '[^\n]+') do
        files[file] = true
        any_file = true
      end
    end
  end
end
if any_file then
  for _, agent in ipairs(out.agents) do
    for file in pairs(files) do
      if redis.call('SISMEMBER', key('affinity:' .. agent.name), file) == 1 then
        agent.affinity[#agent.affinity + 1] = file
      end
    end
  end
end
return cjson.encode(out)
