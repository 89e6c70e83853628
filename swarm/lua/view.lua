--!include board_lib
-- The captain's look at the board, in one round trip: reclaim expired leases, then return what
-- assigning needs: every registered agent with its card, last heartbeat and load; the next ready
-- tasks (claim order) that some live agent with a free slot can do, no more than those free slots
-- (tasks of paused kinds, and tasks no free agent has the capabilities for, are read past), and
-- whether more lie behind them; and for each agent the files of those tasks it has affinity for.
-- A task comes with only what assigning needs: id, caps, files.
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
local takers = {}  -- the live agents with a free slot: what each can do ({can = set, any = bool})
local cards = redis.call('HGETALL', key('agents'))
for i = 1, #cards, 2 do
  local name = cards[i]
  local agent = {name = name, card = cards[i + 1], seen = seen[name] or 0,
    load = redis.call('SCARD', key('owned:', name)), affinity = {}}
  if agent.seen > 0 and agent.seen >= live_since then
    local ok_card, card = pcall(cjson.decode, agent.card)
    local room = ok_card and type(card) == 'table' and type(card.concurrency) == 'number' and card.concurrency
    if room and type(card.prefetch) == 'number' then room = room + card.prefetch end
    if room and room > agent.load then
      free = free + room - agent.load
      local can, any = {}, true
      if type(card.capabilities) == 'table' then
        for _, cap in ipairs(card.capabilities) do
          if type(cap) == 'string' then
            can[cap] = true
            any = false
          end
        end
        if can['*'] then any = true end
      end
      takers[#takers + 1] = {can = can, any = any}
    end
  end
  out.agents[#out.agents + 1] = agent
end

-- Can some free agent do a task needing `caps` (comma-separated)?
local function taken_by_someone(caps)
  for _, taker in ipairs(takers) do
    if taker.any then return true end
    local fits = true
    for cap in string.gmatch(caps, '[^,]+') do
      if not taker.can[cap] then fits = false break end
    end
    if fits then return true end
  end
  return false
end

local want = math.min(tonumber(ARGV[5]), free)
local offset = tonumber(ARGV[4])
local files = {}
local any_file = false
local walked = 0
if want > 0 then
  local paused = paused_kinds()
  local fit_caps = {}  -- caps -> whether some free agent can do them (asked once per set)
  while #out.tasks < want and walked < CLAIM_SCAN do
    local ids = redis.call('ZRANGE', key('ready'), offset + walked, offset + walked + 99)
    if #ids == 0 then break end
    for _, id in ipairs(ids) do
      walked = walked + 1
      local f = redis.call('HMGET', key('task:', id), 'kind', 'caps', 'files')
      local kind, caps = f[1], f[2]
      if kind and not paused[kind] then
        local fits = fit_caps[caps]
        if fits == nil then
          fits = taken_by_someone(caps)
          fit_caps[caps] = fits
        end
        if fits then
          out.tasks[#out.tasks + 1] = {id = id, caps = caps, files = f[3]}
          for file in string.gmatch(f[3], '[^\n]+') do
            files[file] = true
            any_file = true
          end
          if #out.tasks == want then break end
        end
      end
    end
  end
end
if want > 0 then out.scanned = walked end  -- entries of `ready` read past for these tasks (from the offset)
-- Whether ready tasks lie beyond what was read: a captain that took a short page for the end of the
-- queue would never reach the tasks behind it.
out.more = want > 0 and offset + walked < redis.call('ZCARD', key('ready'))
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
