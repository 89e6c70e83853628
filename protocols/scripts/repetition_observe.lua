-- Count a batch of classified status/chat messages and coalesce repetitions into signals, atomically.
--
-- Two scopes count every idle/other message: the sending agent, and the whole swarm. A scope is a
-- state hash (`t` = its clock, the newest ts seen; `c:<family>` = messages of that family in the
-- window; `o:<family>` = the id of its open signal) and a window zset (member
-- `<family>|<message id>`, score = ts); the window is (clock - window_ms, clock]. An agent also has
-- a families hash for near-duplicate matching: `f:<simhash>` = the signature of the family's first
-- message, and an inverted index `x:<feature hash>` = the families having that feature.
--
-- An `other` message joins the agent's family whose SimHash is within max_distance bits of its
-- own, or that shares at least min_shared features making up at least min_overlap of the smaller
-- signature (the best such family; ties go to the smaller id); else it starts a family named
-- after its own SimHash. Idle messages all count under the family `idle`.
-- With repeats on, an agent's `other` family that repeats (a second message while one is in the
-- agent's window) is chatter: its messages in the window move to `idle` (same scores) and the
-- family is marked (`r:<simhash>` in the families hash), so its later messages count as `idle` at
-- once. The families hash is emptied when the agent's window is. Blocked reports (cls `b`) count
-- in the agent's `blocked` family only, with their own threshold, never swarm-wide.
-- When a family's count reaches the scope's threshold a signal fires: its evidence is the family's
-- messages in the window, its id comes from (scope, family, first evidence id), so replaying the
-- same messages after a crash yields the same id. While the signal is open, later messages of the
-- family only raise its count. It closes when the family goes quiet for a whole window or, for an
-- agent, when the agent reports progress (cls `p`), which also empties the agent's window.
-- Every message id is remembered for 2 windows: a redelivered message changes nothing, but if it
-- fired a signal, the signal is returned again (publishing is at-least-once).
--
-- Signals hash: `<id>` = JSON of the fixed fields (scope, agent, fingerprint, first_seen, sample,
-- fired_at, fired_by); `<id>|c` count, `<id>|l` last seen, `<id>|o` 1 while open, `<id>|e` the
-- evidence ids as netstrings (`<byte length>:<id>`, so any id is safe), `<id>|n` how many.
--
-- KEYS: seen zset, fires hash, signals hash, signal index zset, swarm state hash, swarm window
--       zset, then (state hash, window zset, families hash) per agent in the batch.
--       Keys in KEYS, not built from a prefix like the board scripts' (board_lib's `key`): the caller
--       knows every key before the call (swarm/keys.py `repetition_*`), and a script that does
--       declares its keys; the script builds no name.
-- ARGV: window_ms, agent_threshold, swarm_threshold (0 = off), max_distance, min_shared,
--       min_overlap, max_evidence, max_signals, swarm scope name, blocked_threshold, repeats (`1`:
--       a repeated family is chatter); then per message 8 fields: index
--       into KEYS of the agent's state hash, agent, cls (`i` idle, `o` other, `p` progress, `b` blocked),
--       16-hex SimHash and signature (space-separated 8-hex feature hashes; cls `o` only),
--       message id, ts (ms), sample text.
-- Returns per fire 7 items: message position (0-based), signal id, fixed-fields JSON, count,
-- last seen, open (1/0), evidence netstrings.
local W = tonumber(ARGV[1])
local AGENT_T, SWARM_T = tonumber(ARGV[2]), tonumber(ARGV[3])
local MAXD, MIN_SHARED, MIN_OVERLAP = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local MAXEV, MAXSIG, SWARM = tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9]
local BLOCKED_T, REPEATS = tonumber(ARGV[10]), ARGV[11] == '1'
local FIRST, STRIDE = 12, 8
local SEEN, FIRES, SIGNALS, INDEX, SW_STATE, SW_WIN = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local out = {}

local function popcount(x)
  local c = 0
  while x ~= 0 do
    x = bit.band(x, x - 1)
    c = c + 1
  end
  return c
end

local function hamming(a, b)
  return popcount(bit.bxor(tonumber(a:sub(1, 8), 16), tonumber(b:sub(1, 8), 16)))
    + popcount(bit.bxor(tonumber(a:sub(9, 16), 16), tonumber(b:sub(9, 16), 16)))
end

-- Scope clocks are read once per batch and written back at the end (see the bottom).
local clocks = {}

-- Move a scope's clock forward to `ts`; returns the clock.
local function advance(state, ts)
  local clock = clocks[state]
  if clock == nil then clock = tonumber(redis.call('HGET', state, 't') or '0') end
  if ts > clock then clock = ts end
  clocks[state] = clock
  return clock
end

-- Forget a family the agent no longer has in its window: its signature and index entries.
local function forget_family(fam, fp)
  local sig = redis.call('HGET', fam, 'f:' .. fp)
  if not sig then return end
  for h in sig:gmatch('%x+') do
    local rest = {}
    for other in (redis.call('HGET', fam, 'x:' .. h) or ''):gmatch('%S+') do
      if other ~= fp then rest[#rest + 1] = other end
    end
    if #rest == 0 then
      redis.call('HDEL', fam, 'x:' .. h)
    else
      redis.call('HSET', fam, 'x:' .. h, table.concat(rest, ' '))
    end
  end
  redis.call('HDEL', fam, 'f:' .. fp)
end

-- Drop window members at or before the horizon, keeping the per-family counts in step.
local function trim(state, win, fam, horizon)
  local old = redis.call('ZRANGEBYSCORE', win, '-inf', horizon)
  if #old == 0 then return end
  for _, m in ipairs(old) do
    local family = m:match('^(.-)|')
    if redis.call('HINCRBY', state, 'c:' .. family, -1) <= 0 then
      redis.call('HDEL', state, 'c:' .. family)
      if fam and family:sub(1, 2) == 's:' then forget_family(fam, family:sub(3)) end
    end
  end
  redis.call('ZREMRANGEBYSCORE', win, '-inf', horizon)
  -- an agent with nothing left in its window forgets its families (and which of them were chatter)
  if fam and redis.call('ZCARD', win) == 0 then redis.call('DEL', fam) end
end

-- The family of an `other` message (see the header); a new family is indexed for later matches.
local function family_of(fam, fp, sig)
  if redis.call('HEXISTS', fam, 'f:' .. fp) == 1 then return 's:' .. fp end
  local feats, have = {}, {}
  for h in sig:gmatch('%x+') do
    if not have[h] then
      have[h] = true
      feats[#feats + 1] = h
    end
  end
  local shared = {}
  if #feats > 0 then
    local fields = {}
    for i, h in ipairs(feats) do fields[i] = 'x:' .. h end
    for _, list in ipairs(redis.call('HMGET', fam, unpack(fields))) do
      if list then
        for cand in list:gmatch('%S+') do shared[cand] = (shared[cand] or 0) + 1 end
      end
    end
  end
  local best, best_score = nil, -1
  for cand, n in pairs(shared) do
    local score = -1
    local d = hamming(cand, fp)
    if d <= MAXD then score = 2 - d / 64 end
    if n >= MIN_SHARED then
      local theirs = (#(redis.call('HGET', fam, 'f:' .. cand) or '') + 1) / 9
      local share = n / math.max(1, math.min(#feats, theirs))
      if share >= MIN_OVERLAP and share > score then score = share end
    end
    if score >= 0 and (score > best_score or (score == best_score and cand < best)) then
      best, best_score = cand, score
    end
  end
  if best then return 's:' .. best end
  redis.call('HSET', fam, 'f:' .. fp, sig)
  for _, h in ipairs(feats) do
    local list = redis.call('HGET', fam, 'x:' .. h)
    redis.call('HSET', fam, 'x:' .. h, list and (list .. ' ' .. fp) or fp)
  end
  return 's:' .. fp
end

local function close(state, family, sid)
  redis.call('HDEL', state, 'o:' .. family)
  if redis.call('HEXISTS', SIGNALS, sid) == 1 then redis.call('HSET', SIGNALS, sid .. '|o', 0) end
end

local function emit(pos, sid)
  local v = redis.call('HMGET', SIGNALS, sid, sid .. '|c', sid .. '|l', sid .. '|o', sid .. '|e')
  if not v[1] then return end
  out[#out + 1] = pos
  out[#out + 1] = sid
  for j = 1, 5 do out[#out + 1] = v[j] end
end

local function fire(pos, scope, state, win, family, id, ts, sample)
  local prefix = family .. '|'
  local rows = redis.call('ZRANGE', win, 0, -1, 'WITHSCORES')
  local ids, first, last = {}, nil, ts
  for j = 1, #rows, 2 do
    if rows[j]:sub(1, #prefix) == prefix then
      local score = tonumber(rows[j + 1])
      first = first or score
      if score > last then last = score end
      ids[#ids + 1] = rows[j]:sub(#prefix + 1)
    end
  end
  local sid = 'sig-' .. redis.sha1hex(scope .. '\n' .. family .. '\n' .. ids[1]):sub(1, 24)
  local ev = {}
  for j = 1, math.min(#ids, MAXEV) do ev[j] = #ids[j] .. ':' .. ids[j] end
  local fixed = cjson.encode({
    scope = (scope == SWARM) and 'swarm' or 'agent', agent = scope, fingerprint = family,
    first_seen = first, sample = sample, fired_at = ts, fired_by = id,
  })
  redis.call('HSET', SIGNALS, sid, fixed, sid .. '|c', #ids, sid .. '|l', last, sid .. '|o', 1,
    sid .. '|e', table.concat(ev), sid .. '|n', #ev)
  redis.call('ZADD', INDEX, last, sid)
  redis.call('HSET', state, 'o:' .. family, sid)
  local prior = redis.call('HGET', FIRES, id)
  redis.call('HSET', FIRES, id, (prior or tostring(ts)) .. ' ' .. sid)
  emit(pos, sid)
end

-- Add message `id` to the family's open signal in a scope, if it has one still live (seen within the
-- window): true when it did. A signal quiet for a whole window (or evicted) is closed instead.
local function join(state, family, horizon, id, ts)
  local sid = redis.call('HGET', state, 'o:' .. family)
  if not sid then return false end
  local v = redis.call('HMGET', SIGNALS, sid .. '|l', sid .. '|n')
  local last = tonumber(v[1])
  if not (last and last > horizon) then
    close(state, family, sid) -- the next burst is a new signal
    return false
  end
  redis.call('HINCRBY', SIGNALS, sid .. '|c', 1)
  if ts > last then
    redis.call('HSET', SIGNALS, sid .. '|l', ts)
    redis.call('ZADD', INDEX, ts, sid)
  end
  if tonumber(v[2]) < MAXEV then
    redis.call('HINCRBY', SIGNALS, sid .. '|n', 1)
    local ev = redis.call('HGET', SIGNALS, sid .. '|e')
    redis.call('HSET', SIGNALS, sid .. '|e', ev .. #id .. ':' .. id)
  end
  return true
end

-- Count one message in one scope: update the open signal, or fire when the threshold is reached.
local function count_in(pos, scope, state, win, horizon, threshold, family, id, ts, sample)
  redis.call('ZADD', win, ts, family .. '|' .. id)
  local n = redis.call('HINCRBY', state, 'c:' .. family, 1)
  if join(state, family, horizon, id, ts) then return end
  if threshold > 0 and n >= threshold then fire(pos, scope, state, win, family, id, ts, sample) end
end

-- An agent's `other` family that repeats is chatter (see the header): the family of message `fp` as
-- counted, `idle` once the family has repeated; its earlier messages in the window move to `idle`.
local function chatter_family(state, win, fam, family, horizon)
  local mark = 'r:' .. family:sub(3)
  if redis.call('HEXISTS', fam, mark) == 1 then return 'idle' end
  if tonumber(redis.call('HGET', state, 'c:' .. family) or '0') == 0 then return family end
  redis.call('HSET', fam, mark, 1)
  local prefix = family .. '|'
  local rows = redis.call('ZRANGE', win, 0, -1, 'WITHSCORES')
  for j = 1, #rows, 2 do
    if rows[j]:sub(1, #prefix) == prefix then
      local id = rows[j]:sub(#prefix + 1)
      redis.call('ZREM', win, rows[j])
      redis.call('ZADD', win, rows[j + 1], 'idle|' .. id)
      redis.call('HINCRBY', state, 'c:idle', 1)
      join(state, 'idle', horizon, id, tonumber(rows[j + 1]))
    end
  end
  redis.call('HDEL', state, 'c:' .. family)
  local sid = redis.call('HGET', state, 'o:' .. family)
  if sid then close(state, family, sid) end
  return 'idle'
end

local function reset(state, win, fam)
  for _, f in ipairs(redis.call('HKEYS', state)) do
    if f:sub(1, 2) == 'o:' then close(state, f:sub(3), redis.call('HGET', state, f)) end
  end
  redis.call('DEL', state, win, fam) -- the clock survives: it is written back at the end
end

local swarm_clock = 0
for i = FIRST, #ARGV, STRIDE do
  local pos = (i - FIRST) / STRIDE
  local k, agent, cls, fp, sig = tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local id, ts, sample = ARGV[i + 5], tonumber(ARGV[i + 6]), ARGV[i + 7]
  swarm_clock = advance(SW_STATE, ts)
  if ts <= swarm_clock - 2 * W then
    -- older than the dedup memory: it could be a replay, and it is outside every window anyway
  elseif redis.call('ZADD', SEEN, 'NX', ts, id) == 0 then
    local fired = redis.call('HGET', FIRES, id)
    if fired then
      local skip = true -- the first word is the message's ts
      for sid in fired:gmatch('%S+') do
        if not skip then emit(pos, sid) end
        skip = false
      end
    end
  else
    local state, win, fam = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    local clock = advance(state, ts)
    if cls == 'p' then
      reset(state, win, fam)
    elseif ts > clock - W and cls == 'b' then
      trim(state, win, fam, clock - W)
      count_in(pos, agent, state, win, clock - W, BLOCKED_T, 'blocked', id, ts, sample)
    elseif ts > clock - W then
      trim(state, win, fam, clock - W)
      local family = 'idle'
      if cls == 'o' then
        family = family_of(fam, fp, sig)
        if REPEATS then family = chatter_family(state, win, fam, family, clock - W) end
      end
      count_in(pos, agent, state, win, clock - W, AGENT_T, family, id, ts, sample)
      if ts > swarm_clock - W then
        trim(SW_STATE, SW_WIN, nil, swarm_clock - W)
        count_in(pos, SWARM, SW_STATE, SW_WIN, swarm_clock - W, SWARM_T, family, id, ts, sample)
      end
    end
  end
end

for state, clock in pairs(clocks) do redis.call('HSET', state, 't', clock) end

-- Forget message ids older than two windows, and the oldest signals past the retention cap.
local horizon = swarm_clock - 2 * W
if #redis.call('ZRANGEBYSCORE', SEEN, '-inf', horizon, 'LIMIT', 0, 1) > 0 then
  redis.call('ZREMRANGEBYSCORE', SEEN, '-inf', horizon)
  local fires = redis.call('HGETALL', FIRES)
  for j = 1, #fires, 2 do
    if tonumber(fires[j + 1]:match('^%S+')) <= horizon then redis.call('HDEL', FIRES, fires[j]) end
  end
end
local extra = redis.call('ZCARD', INDEX) - MAXSIG
if extra > 0 then
  for _, sid in ipairs(redis.call('ZRANGE', INDEX, 0, extra - 1)) do
    redis.call('HDEL', SIGNALS, sid, sid .. '|c', sid .. '|l', sid .. '|o', sid .. '|e', sid .. '|n')
    redis.call('ZREM', INDEX, sid)
  end
end
return out
