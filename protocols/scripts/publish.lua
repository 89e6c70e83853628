-- Append a batch of messages in one round trip (a single message is a batch of one), after two checks:
-- the caller may send as each message's sender (ACL mode), and each sender is within its publish rate.
-- KEYS[1]: the `publish:rate` hash, sender -> when its token bucket is full again (ms, the server's clock).
-- KEYS[2..]: the distinct target streams (all in the swarm's hash slot).
-- Keys in KEYS, not built from a prefix like the board scripts' (board_lib's `key`): the caller knows
-- every key before the call (swarm/keys.py `stream_for`), and a script that does declares its keys.
-- ARGV[1]: approximate MAXLEN
-- ARGV[2]: the identity keys' prefix, `swarm:{<name>}:identity:` (only asked of the ACL, never written)
-- ARGV[3]: messages per second a sender may publish (its bucket's refill rate); 0 = no limit
-- ARGV[4]: the bucket's size, how many a sender may publish at once after a quiet spell
-- ARGV[5..]: triples (1-based index into KEYS of the message's stream, its sender, the message JSON)
-- Returns one item per message, in order: its new entry id, or, when its sender's bucket was empty,
-- the integer number of milliseconds until the bucket holds a token again (the message is not
-- written). Within one call the messages of a sender take its tokens in order, so those refused are
-- the sender's last ones; other senders' messages are written all the same.
-- Refuses the whole call, writing nothing, with an error reply `FORBIDDEN <text>` when the caller may
-- not act as a sender, or `INVALID <text>` when a message it must check is not a JSON object with a
-- string `sender`.
local maxlen, identity = ARGV[1], ARGV[2]
local rate, burst = tonumber(ARGV[3]), tonumber(ARGV[4])
local count = (#ARGV - 4) / 3
local STEP = 1000  -- fields per HMGET/HSET: well below Lua's unpack limit

-- Who the messages are from. A caller that may act as the captain (a captain's user, or anyone in
-- the trusted mode without ACL users) acts for every agent: the senders it names are taken as they
-- are, at the cost of one ACL check per call. Any other caller (an agent's user) has each message's
-- own `sender` field read from its JSON and checked: naming another sender in ARGV would not help.
local senders = nil  -- message number -> sender, when not ARGV's
if not redis.acl_check_cmd('SET', identity .. '@captain', '1') then
  senders = {}
  local allowed = {}
  for n = 1, count do
    local ok, msg = pcall(cjson.decode, ARGV[4 + 3 * n])
    local sender = ok and type(msg) == 'table' and msg.sender
    if type(sender) ~= 'string' then
      return redis.error_reply('INVALID message ' .. n .. ' of the batch is not a JSON object with a string ' ..
        'sender; send messages as protocols/PROTOCOL.md section 3 describes them')
    end
    if allowed[sender] == nil then
      allowed[sender] = redis.acl_check_cmd('SET', identity .. sender, '1')
      if not allowed[sender] then
        return redis.error_reply('FORBIDDEN this Redis user may not publish as ' .. sender ..
          ": an agent's user sends only as its own agent; send as that agent, or connect as " .. sender ..
          ' (`swarm acl add ' .. sender .. '` makes its user) or as a captain')
      end
    end
    senders[n] = sender
  end
end

local function append(n)  -- write message n; its entry id
  local i = 2 + 3 * n
  return redis.call('XADD', KEYS[tonumber(ARGV[i])], 'MAXLEN', '~', maxlen, '*', 'm', ARGV[i + 2])
end

if rate <= 0 then  -- no limit: not even the clock is read
  local out = {}
  for n = 1, count do out[n] = append(n) end
  return out
end

-- A token bucket per sender, holding up to `burst` tokens and refilled at `rate` a second; a message
-- takes one. Kept as one number per sender (GCRA, the "generic cell rate algorithm"): `due`, the time
-- (ms) by which its bucket is full again; at `now` it holds (tau - (due - now)) / interval tokens.
local interval = 1000 / rate  -- ms a token takes to come back
local tau = burst * interval  -- how far ahead of now a sender's `due` may run: a full bucket's worth
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000  -- ms, to the microsecond

-- A sender's `due` as stored (nil: never seen, or expired with the key) as of now: `now` when its
-- bucket is full; one more than tau ahead is from a clock that went back (a failover to another
-- server), and counts as tau ahead.
local function current(at)
  at = tonumber(at)
  if at == nil or at <= now then return now end
  return math.min(at, now + tau)
end

-- Once no one has published for tau, every bucket is full and the key expires: idle senders' buckets
-- cost no memory.
local expiry = math.ceil(tau) + 1000

if count == 1 then  -- one message (every `Bus.publish`): the same steps, without the tables
  local sender = senders and senders[1] or ARGV[6]
  local next_due = current(redis.call('HGET', KEYS[1], sender)) + interval
  if next_due - now > tau + 0.001 then return {math.max(1, math.ceil(next_due - tau - now))} end
  local id = append(1)
  redis.call('HSET', KEYS[1], sender, next_due)
  redis.call('PEXPIRE', KEYS[1], expiry)
  return {id}
end

local names, due = {}, {}
for n = 1, count do
  local sender = senders and senders[n] or ARGV[3 + 3 * n]
  if due[sender] == nil then
    names[#names + 1] = sender
    due[sender] = now
  end
end
for first = 1, #names, STEP do
  local last = math.min(#names, first + STEP - 1)
  local saved = redis.call('HMGET', KEYS[1], unpack(names, first, last))
  for j = first, last do due[names[j]] = current(saved[j - first + 1]) end
end
local out = {}
for n = 1, count do
  local sender = senders and senders[n] or ARGV[3 + 3 * n]
  local next_due = due[sender] + interval
  if next_due - now <= tau + 0.001 then  -- (a microsecond's slack for rounding)
    due[sender] = next_due
    out[n] = append(n)
  else
    out[n] = math.max(1, math.ceil(next_due - tau - now))  -- ms until it has a token again
  end
end
local fields = {}
for _, sender in ipairs(names) do
  fields[#fields + 1] = sender
  fields[#fields + 1] = due[sender]
end
for first = 1, #fields, 2 * STEP do
  redis.call('HSET', KEYS[1], unpack(fields, first, math.min(#fields, first + 2 * STEP - 1)))
end
redis.call('PEXPIRE', KEYS[1], expiry)
return out
