--!include board_lib
-- The captain's look at the board, in one round trip: reclaim expired leases, then return what
-- assigning needs: every registered agent with its card, last heartbeat and load; as many of the
-- next ready tasks (claim order) as the live agents' free slots could take (with some to spare, for
-- tasks no free agent fits), and whether more lie behind them; and for each agent the files of
-- those tasks it has affinity for.
-- ARGV[4]: offset into the ready queue  ARGV[5]: most tasks to return  ARGV[6]: most leases to reclaim
-- ARGV[7]: an agent heard from within this many ms counts as live
local bad = invalid_numbers(4, 'offset', 5, 'count', 6, 'reclaim limit', 7, 'live window ms')
if bad then return bad end
local out = reclaim_round(tonumber(ARGV[6]))
out.tasks, out.agents = {}, {}

local seen = {}
local rows = redis.call('ZRANGE', key('agents:seen'), 0, -1, 'WITHSCORES')
for i = 1, #rows, 2 do seen[rows[i]] = tonumber(rows[i + 1]) end
local live_since = NOW - tonumber(ARGV[7])
local free = 0
local cards = redis.call('HGETALL', key('agents'))
for i = 1, #cards, 2 do
  local name = cards[i]
  local agent = {name = name, card = cards[i + 1], seen = seen[name] or 0,
    load = redis.call('SCARD', key('owned:', name)), affinity = {}}
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
  local paused = paused_kinds()
  local ids = redis.call('ZRANGE', key('ready'), offset, offset + want - 1)
  out.scanned = #ids  -- (tasks of paused kinds are read past, not returned)
  for _, id in ipairs(ids) do
    local t = load(id)
    if t and not paused[t.kind] then
      out.tasks[#out.tasks + 1] = t
      for file in string.gmatch(t.files, '[^\n]+') do
        files[file] = true
        any_file = true
      end
    end
  end
end
-- Whether ready tasks lie beyond this page: the page may be cut short by the free slots, and a
-- captain that took a short page for the end of the queue would never reach the tasks behind it.
out.more = want > 0 and offset + want < redis.call('ZCARD', key('ready'))
if any_file then
  for _, agent in ipairs(out.agents) do
    for file in pairs(files) do
      if redis.call('SISMEMBER', key('affinity:', agent.name), file) == 1 then
        agent.affinity[#agent.affinity + 1] = file
      end
    end
  end
end
return cjson.encode(out)
