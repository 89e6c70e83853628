-- Shared by every board script (the loader prepends this file where a script says
-- `--!include board_lib`). Conventions for every board script:
--   KEYS[1]  the swarm's board-event stream, key('events') (routes the call to the swarm's cluster slot;
--            every other key the script touches carries the same hash tag, so it lives on that slot too)
--   ARGV[1]  the key prefix `swarm:{<name>}:`, from which `key` builds every key name
--   ARGV[2]  a fresh message id (ULID) for the event this call appends
--   ARGV[3]  the approximate MAXLEN of streams
--   ARGV[4..] the script's own arguments
-- A script returns one JSON document: {"ok": true, ...} or {"error": CODE, "message": TEXT}.
local PREFIX = ARGV[1]
local EVENT_ID = ARGV[2]
local MAXLEN = ARGV[3]
local TERMINAL = {done = true, failed = true, cancelled = true}
local CLAIM_SCAN = 1000

-- Every key name of a swarm, the one list of them in Lua: the name swarm/keys.py gives it, then the
-- key after the prefix (a family of keys ends in the <part> that completes it). The same names as
-- swarm/keys.py and the same keys as the key tables of protocols/PROTOCOL.md: tests/test_keys.py
-- checks that the three agree (keep this block's form), and that every key(...) in swarm/lua asks
-- for a key listed here, so a name is spelled in no other way.
--  streams
--   bus                       bus
--   captain                   captain
--   inbox                     inbox:<agent>
--   role                      role:<role>
--   events                    events
--   dlq                       dlq
--  publishing (publish.lua is passed it in KEYS)
--   publish_rate              publish:rate
--  board
--   task                      task:<id>
--   history                   history:<id>
--   state                     state:<state>
--   tasks                     tasks
--   ready                     ready
--   delayed                   delayed
--   leases                    leases
--   owned                     owned:<agent>
--   affinity                  affinity:<agent>
--   seq                       seq
--   dependents                dependents:<id>
--   dedup                     dedup
--   idle_until                idle:until
--   idle_ask                  idle:ask
--   handoff                   handoff:<agent>
--  agents and captain
--   agents                    agents
--   agent_seen                agents:seen
--   presence_lock             presence:lock
--   paused                    paused
--   identity                  identity:<agent>
--   budget                    budget
--   spend                     spend
--   leader                    captain:leader
--   epoch                     captain:epoch
--  repetition detection (repetition_observe.lua is passed these in KEYS)
--   repetition_seen           rep:seen
--   repetition_fires          rep:fires
--   repetition_signals        rep:signals
--   repetition_index          rep:index
--   repetition_swarm          rep:swarm
--   repetition_swarm_window   rep:swarm:win
--   repetition_agent          rep:agent:<agent>
--   repetition_window         rep:win:<agent>
--   repetition_families       rep:fam:<agent>
--  discovery engine
--   discovered                discovery:tasks:<source>
--   escalated                 discovery:escalated
-- Board scripts build their keys with `key` rather than take them in KEYS: most are found as the
-- script runs (the ids in `ready`, a task's dependents). The scripts that know all their keys before
-- the call (publish, dead_letter, leader, repetition_observe) take them in KEYS, named by
-- swarm/keys.py; the board uses only some of the names above.
-- A comment, not a Lua table: board_lib runs on every call (Valkey keeps nothing between calls),
-- and building even a table of the 17 names the board uses cost every board call ~4 us more
-- (measured; an `own` heartbeat takes ~60 us), while the constant names in the calls cost nothing.

-- The key `name` (a key of the list above, or the start of one ending in ':') completed by `part`:
-- key('ready'), key('task:', id).
local function key(name, part)
  if part then return PREFIX .. name .. part end
  return PREFIX .. name
end

-- Index writes (ZADD/ZREM/SADD/SREM on the ready, delayed, leases, state, owned and affinity sets)
-- made inside a batch are deferred and sent as one command per key and operation: N transitions
-- cost a handful of calls, not ~8 N. Consecutive writes of one kind to a key coalesce; a write of
-- another kind to the same key sends the pending ones first, so each key sees its writes in order.
-- Nothing inside a batch may read an index it writes (claim_ready pages past its own claims).
local BATCH = nil  -- key -> {op = ..., args = {...}} while a batch is open
local BATCH_KEYS = {}
-- Tasks this call made ready, to be offered to idle agents once their own event is written and no
-- batch is open (see the idle hand-off below; defined there, called from here).
local PENDING = {}
local offer_pending
local UNPACK_STEP = 4000  -- even, so ZADD score/member pairs stay together; below Lua's unpack limit

local function send(op, k, args)
  for i = 1, #args, UNPACK_STEP do redis.call(op, k, unpack(args, i, math.min(#args, i + UNPACK_STEP - 1))) end
end

local function index(op, k, ...)
  if not BATCH then return redis.call(op, k, ...) end
  local run = BATCH[k]
  if run and run.op ~= op then
    send(run.op, k, run.args)
    run = nil
  end
  if not run then
    run = {op = op, args = {}}
    BATCH[k] = run
    BATCH_KEYS[#BATCH_KEYS + 1] = k
  end
  local args = run.args
  for i = 1, select('#', ...) do args[#args + 1] = select(i, ...) end
end

local function batch_begin()
  BATCH, BATCH_KEYS = {}, {}
end

local function batch_end()
  local pending, keys = BATCH, BATCH_KEYS
  BATCH, BATCH_KEYS = nil, {}
  for _, k in ipairs(keys) do
    local run = pending[k]
    if run then
      pending[k] = nil
      send(run.op, k, run.args)
    end
  end
  offer_pending()
end

local function clock_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local NOW = clock_ms()

local function load(id)
  local raw = redis.call('HGETALL', key('task:', id))
  if #raw == 0 then return nil end
  local t = {}
  for i = 1, #raw, 2 do t[raw[i]] = raw[i + 1] end
  return t
end

-- What an owner's report needs of a task (HMGET: a fraction of HGETALL's cost on a full hash).
local REPORT_FIELDS = {'id', 'state', 'owner', 'token', 'created', 'title', 'files'}
local function load_for_report(id)
  local raw = redis.call('HMGET', key('task:', id), unpack(REPORT_FIELDS))
  if not raw[1] then return nil end
  local t = {}
  for i, f in ipairs(REPORT_FIELDS) do t[f] = raw[i] or '' end
  return t
end

local function save(t, ...)
  local fields = {...}
  local args = {}
  for _, f in ipairs(fields) do
    args[#args + 1] = f
    args[#args + 1] = t[f] or ''
  end
  args[#args + 1] = 'updated'
  args[#args + 1] = NOW
  t.updated = tostring(NOW)
  redis.call('HSET', key('task:', t.id), unpack(args))
end

local function err(code, message)
  return cjson.encode({error = code, message = message})
end

-- The `invalid` reply for the first of the numeric arguments (pairs: ARGV index, name) that is not a
-- number, or nil when all are: scripts check theirs before the first write.
local function invalid_numbers(...)
  local checks = {...}
  for i = 1, #checks, 2 do
    local v = ARGV[checks[i]]
    if tonumber(v) == nil then return err('invalid', checks[i + 1] .. ' must be a number, got ' .. tostring(v)) end
  end
  return nil
end

-- Identity, enforced by the server (see `swarm acl`): under ACL users each agent's user may write
-- only its own identity key `id:<name>`, a captain's user every one (`id:@captain` is the captain's
-- own), a viewer's none. The script asks the server's ACL whether the caller could write it (register
-- writes it: the name's current instance and connection). With no ACL users (the trusted mode) every
-- caller may act as anyone.
local function acts_as(name)
  return redis.acl_check_cmd('SET', key('identity:', name), '1')
end

-- nil when the caller may act as `name`, else the `forbidden` reply.
local function check_caller(name)
  if acts_as(name) then return nil end
  if name == '@captain' then
    return err('forbidden', 'only a captain may do this; connect as a user made with `swarm acl add NAME --role captain`')
  end
  return err('forbidden', 'this Redis user may not act as ' .. name .. '; connect as ' .. name ..
    ' (`swarm acl add ' .. name .. '` makes its user) or as a captain')
end

local function ok(t, extra)
  local out = {ok = true, task = t}
  if extra then for k, v in pairs(extra) do out[k] = v end end
  return cjson.encode(out)
end

local function not_found(id)
  return err('not_found', 'no task ' .. id .. ' on this board; `swarm task list` shows the ids')
end

-- Order of the ready queue: higher priority first, then older first. Age is the creation sequence
-- number in the id (`t-<n>`), not the creation time: many tasks share a millisecond, and a sorted
-- set breaks score ties by member text, which would put t-10 before t-9.
local function score(t)
  return (9 - tonumber(t.priority)) * 1e14 + tonumber(string.sub(t.id, 3))
end

local function set_state(t, new)
  index('ZREM', key('state:', t.state), t.id)
  index('ZADD', key('state:', new), tonumber(t.created), t.id)
  t.state = new
end

-- An event's detail is capped at the wire's text limit (16384 characters; the task hash keeps the
-- whole result or reason), cut at a UTF-8 character boundary so the event still decodes.
local DETAIL_MAX = 16384
local function clip(s)
  if #s <= DETAIL_MAX then return s end
  local cut = DETAIL_MAX
  while cut > 0 do
    local b = string.byte(s, cut + 1)
    if b < 128 or b >= 192 then break end  -- byte cut+1 starts a character: cut before it
    cut = cut - 1
  end
  return string.sub(s, 1, cut)
end

-- Append the transition to the board-event stream (a `task_event` message in the standard
-- envelope) and to the task's own history list, in the same atomic step as the change.
local EMITTED = 0
local function next_id()
  EMITTED = EMITTED + 1
  if EMITTED > 1 then return EVENT_ID .. '.' .. EMITTED end  -- one call may write many messages
  return EVENT_ID
end

local function emit(t, event, detail)
  local id = next_id()
  local body = {task_id = t.id, event = event, state = t.state, token = tonumber(t.token),
    detail = clip(detail or '')}
  if t.owner and t.owner ~= '' then body.owner = t.owner end
  local msg = cjson.encode({v = 1, id = id, sender = 'board', to = '@all', ts = NOW,
    priority = 'normal', kind = 'task_event', body = body})
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', MAXLEN, '*', 'm', msg)
  redis.call('RPUSH', key('history:', t.id), msg)
  offer_pending()  -- a task this transition made ready goes to an idle agent after its own event
end

-- What an agent's capabilities are (comma-separated, '*' = any), as `fits` reads them.
local function parse_caps(caps)
  local can, any = {}, false
  for cap in string.gmatch(caps, '[^,]+') do
    if cap == '*' then any = true end
    can[cap] = true
  end
  return can, any
end

-- Can an agent with these capabilities (parse_caps) take task `t` now? Not when its kind is paused.
local function fits(t, can, any, paused)
  if paused[t.kind] then return false end
  if any then return true end
  for cap in string.gmatch(t.caps, '[^,]+') do
    if not can[cap] then return false end
  end
  return true
end

-- Idle hand-off. An agent whose claim came back short waits (BLMPOP) on its list handoff:<agent>,
-- announced in idle:until (agent -> when its wait ends, ms) and idle:ask (agent -> `<slots>,<lease
-- ms>,<speak 0|1>,<caps>`). A task that becomes ready while such an agent waits is claimed for it by
-- the script that made it ready, and pushed onto its list: the agent gets it in one hop, with no
-- claim of its own. Only registered agents not marked gone (agents:seen > 0) are handed work.
local IDLE_SCAN = 64  -- live idle agents looked at per call
local IDLE = nil      -- those agents, read once per call when first needed (false: none)

local function idle_agents()
  if IDLE ~= nil then return IDLE end
  IDLE = false
  local names = redis.call('ZRANGEBYSCORE', key('idle:until'), '(' .. NOW, '+inf', 'LIMIT', 0, IDLE_SCAN)
  if #names == 0 then return IDLE end
  local asks = redis.call('HMGET', key('idle:ask'), unpack(names))
  local seen = redis.call('ZMSCORE', key('agents:seen'), unpack(names))
  local live = {}
  for i, name in ipairs(names) do
    local slots, lease, speak, caps = string.match(asks[i] or '', '^(%d+),(%d+),([01]),(.*)$')
    if slots and tonumber(slots) > 0 and tonumber(seen[i] or '0') > 0 then
      local can, any = parse_caps(caps)
      live[#live + 1] = {agent = name, slots = tonumber(slots), lease = tonumber(lease), speak = speak == '1',
        caps = caps, can = can, any = any, handed = {}}
    end
  end
  if #live > 0 then IDLE = live end
  return IDLE
end

-- `agent` no longer waits for a hand-off (it claims, or is gone): nothing more is handed to it.
local function stop_idling(agent)
  redis.call('ZREM', key('idle:until'), agent)
  redis.call('HDEL', key('idle:ask'), agent)
  IDLE = nil  -- read again when next needed
end

-- An open task whose dependencies are done is ready now, or after its retry backoff. One that is
-- ready now is offered to the idle agents (offer_pending), once its event is written.
local function make_ready(t)
  if tonumber(t.deps_left) > 0 then return end
  local not_before = tonumber(t.not_before or '0') or 0
  if not_before > NOW then
    index('ZADD', key('delayed'), not_before, t.id)
  else
    index('ZADD', key('ready'), score(t), t.id)
    if idle_agents() then PENDING[#PENDING + 1] = t end
  end
end

local function promote_due()
  local due = redis.call('ZRANGEBYSCORE', key('delayed'), '-inf', NOW, 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    local t = load(id)
    redis.call('ZREM', key('delayed'), id)
    if t and t.state == 'open' then
      redis.call('ZADD', key('ready'), score(t), id)
      if idle_agents() then PENDING[#PENDING + 1] = t end
    end
  end
  offer_pending()
end

-- Drop every index entry that ties the task to an owner or a queue. Only open tasks sit in the
-- ready and delayed queues, and only owned ones hold a lease, so the rest need no write.
local function unlink(t)
  if t.state == 'open' then
    index('ZREM', key('ready'), t.id)
    index('ZREM', key('delayed'), t.id)
  end
  if t.owner and t.owner ~= '' then
    index('ZREM', key('leases'), t.id)
    index('SREM', key('owned:', t.owner), t.id)
  end
end

-- The task's lease now runs until `until_ms` (the caller saves `lease_until`).
local function set_lease(t, until_ms)
  t.lease_until = tostring(until_ms)
  index('ZADD', key('leases'), until_ms, t.id)
end

-- Give the task to `agent`: new token, lease, attempt counted, owner index updated.
local function hand_out(t, agent, lease_ms, state)
  local until_ms = NOW + lease_ms  -- computed before the first write: a bad lease fails with nothing done
  unlink(t)
  t.owner = agent
  t.token = tostring(tonumber(t.token) + 1)
  t.attempts = tostring(tonumber(t.attempts) + 1)
  set_state(t, state)
  set_lease(t, until_ms)
  index('SADD', key('owned:', agent), t.id)
  save(t, 'owner', 'token', 'attempts', 'lease_until', 'state')
end

-- Take the task away from its owner (fencing the old token) into `state`, with `field` set to `value`.
local function disown(t, state, field, value)
  unlink(t)
  t.owner = ''
  t.lease_until = '0'
  t.token = tostring(tonumber(t.token) + 1)
  t[field] = value
  set_state(t, state)
  save(t, 'owner', 'lease_until', 'token', field, 'state')
end

-- Take the task away from its owner and put it back on the queue (ready at `not_before`).
local function requeue(t, not_before)
  disown(t, 'open', 'not_before', tostring(not_before))
  make_ready(t)
end

-- The owner's checks, the same for every transition that takes a token: the token first (a stale
-- owner is told so even after the task moved on), then the state, then that `agent` owns it, so that
-- a third party holding a valid token is refused too.
local function check_owner(t, token, agent)
  if t.token ~= token then
    -- Never say the current token: whoever holds a wrong one must not learn the right one.
    local given = tonumber(token)
    if given and given == math.floor(given) and given >= 1 and given < tonumber(t.token) then
      return err('stale_token', 'token ' .. token .. ' for task ' .. t.id .. ' is stale: the task moved on since (it is ' ..
        t.state .. ' now); drop it')
    end
    return err('stale_token', 'token ' .. token .. ' for task ' .. t.id .. ' was never issued: use the token your ' ..
      'claim or assignment gave you')
  end
  if t.state ~= 'assigned' and t.state ~= 'running' then
    return err('illegal', 'task ' .. t.id .. ' is ' .. t.state .. '; only an assigned or running task can do that')
  end
  if t.owner ~= agent then
    return err('illegal', 'task ' .. t.id .. ' is owned by ' .. t.owner .. ', not ' .. agent)
  end
  return nil
end

-- A refusal reply as one entry of a batch's results: {id = ..., error = code, message = ...}.
local function refusal(id, reply)
  local e = cjson.decode(reply)
  return {id = id, error = e.error, message = e.message}
end

-- An agent's word on one of its tasks in a batch (settle, start_many, renew): the task, read by
-- `loader`, or nil and the refusal entry (not found, a stale token, not assigned or running, or
-- another agent's). One refused does not stop the rest of the batch.
local function owned_task(id, token, agent, loader)
  local t = loader(id)
  if not t then return nil, refusal(id, not_found(id)) end
  local refused = check_owner(t, token, agent)
  if refused then return nil, refusal(id, refused) end
  return t, nil
end

-- An agent's batch of reports (settle, start_many, renew): ARGV[first..] holds `stride` arguments a
-- task, task id and token first. Runs `act(t, i)` (i: the task's first ARGV index) on each task
-- `owned_task` accepts, inside one index batch, and returns one entry a task, in order: what `act`
-- returned, or the refusal.
local function for_owned(first, stride, agent, loader, act)
  local results = {}
  batch_begin()
  for i = first, #ARGV, stride do
    local t, refused = owned_task(ARGV[i], ARGV[i + 1], agent, loader)
    if refused then
      results[#results + 1] = refused
    else
      results[#results + 1] = act(t, i)
    end
  end
  batch_end()
  return results
end

-- Dependents of a finished task: one fewer dependency; ready when none are left.
local function release_dependents(t)
  for _, dep_id in ipairs(redis.call('SMEMBERS', key('dependents:', t.id))) do
    local d = load(dep_id)
    if d then
      d.deps_left = tostring(math.max(0, tonumber(d.deps_left) - 1))
      save(d, 'deps_left')
      if d.state == 'open' then make_ready(d) end
    end
  end
  offer_pending()
end

local function finish(t, state, field, value, event)
  unlink(t)
  t[field] = value
  set_state(t, state)
  t.lease_until = '0'
  save(t, field, 'state', 'lease_until')
  emit(t, event, value)
end

-- End a task nobody finished (cancelled, or failed when its last lease ran out): its owner's token
-- is fenced off first, so a late report from the owner is refused.
local function revoke(t, state, reason)
  t.token = tostring(tonumber(t.token) + 1)
  save(t, 'token')
  finish(t, state, 'reason', reason, state)
end

-- A task its owner lost without a word (its lease ran out, its connections closed, a new instance of
-- it registered): back to open with the old token fenced off, or failed on its last attempt.
local function lose(t, why)
  if tonumber(t.attempts) >= tonumber(t.max_attempts) then
    revoke(t, 'failed', why .. ' on attempt ' .. t.attempts .. ' of ' .. t.max_attempts)
  else
    requeue(t, 0)
    emit(t, 'expired', why)
  end
end

-- Every task `agent` owns, lost at once (see `lose`): the ids.

-- Leases that ran out: back to open (the old token fenced off) or, past max_attempts, failed.
-- Run by the captain's reaper and by every claim, so a board with no captain still heals.
local function reclaim_expired(limit)
  local moved = {}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', key('leases'), '-inf', NOW, 'LIMIT', 0, limit)) do
    local t = load(id)
    if not t or TERMINAL[t.state] then
      redis.call('ZREM', key('leases'), id)
    else
      local owner = t.owner
      -- An owner that let a lease run out is not keeping up (dead, paused, cut off): count it as
      -- unseen until its next heartbeat, so the captain does not hand the task straight back to it,
      -- nor does the idle hand-off (first, so that `lose` offers the task to someone else).
      if owner ~= '' then
        stop_idling(owner)
        if redis.call('ZSCORE', key('agents:seen'), owner) then redis.call('ZADD', key('agents:seen'), 0, owner) end
      end
      lose(t, 'lease of ' .. owner .. ' expired')
      moved[#moved + 1] = id
    end
  end
  promote_due()
  return moved
end

-- The captain's round (reclaim.lua, view.lua): reclaim up to `limit` expired leases, then say when
-- to look again. Reply fields: moved (the ids), next_expiry (earliest lease end) and next_ready
-- (earliest backoff end), each of the last two left out when there is none.

-- The owner's status message on the bus ("working on t-3: ...", "done t-3: ..."), written in the
-- same step as the transition: saying what it does costs an agent no round trip of its own.
local function say(agent, state, text, task_id)
  local msg = cjson.encode({v = 1, id = next_id(), sender = agent, to = '@all', ts = NOW, priority = 'normal',
    kind = 'status', body = {text = clip(text), state = state, task_id = task_id}})
  redis.call('XADD', key('bus'), 'MAXLEN', '~', MAXLEN, '*', 'm', msg)
end

-- One status for what one call did to `ts` ("working on t-3: <title>"; for several tasks
-- "working on 12 tasks: t-3, t-4, ..."): a batch of transitions is one message on the bus, not one each.
local function say_tasks(agent, state, verb, ts)
  if #ts == 0 then return end
  if #ts == 1 then return say(agent, state, verb .. ' ' .. ts[1].id .. ': ' .. ts[1].title, ts[1].id) end
  local ids = {}
  for i, t in ipairs(ts) do ids[i] = t.id end
  say(agent, state, verb .. ' ' .. #ts .. ' tasks: ' .. table.concat(ids, ', '), ts[1].id)
end

-- The board-event stream's newest id ('0-0' while empty). A claim that comes back short returns it:
-- the agent then waits for events after it (new work may be there) and misses none, re-reads none.
local function events_tip()
  local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  if #last == 0 then return '0-0' end
  return last[1][1]
end

-- Budgets a program enforces: `budget` holds the limits in USD (field `swarm`: SWARM_BUDGET_USD;
-- `agent:<name>`: a card's budget_usd), `spend` what was reported spent (same fields, and `tokens:...`).
-- Once a limit is reached, nothing more is handed out under it: the reason, or nil.
local function budget_stop(agent)
  local limits = redis.call('HMGET', key('budget'), 'swarm', 'agent:' .. agent)
  if not limits[1] and not limits[2] then return nil end
  local spent = redis.call('HMGET', key('spend'), 'swarm', 'agent:' .. agent)
  local function over(i) return limits[i] and tonumber(spent[i] or '0') >= tonumber(limits[i]) end
  if over(1) then
    return 'the swarm has spent its budget ($' .. (spent[1] or '0') .. ' of $' .. limits[1] .. ', SWARM_BUDGET_USD)'
  end
  if over(2) then
    return agent .. ' has spent its budget ($' .. (spent[2] or '0') .. ' of $' .. limits[2] .. ', its card\'s budget_usd)'
  end
  return nil
end

-- The kinds `swarm pause` stopped (kind -> true): no claim or assignment hands out their tasks.
local function paused_kinds()
  local out = {}
  for _, kind in ipairs(redis.call('SMEMBERS', key('paused'))) do out[kind] = true end
  return out
end

-- Hand up to `count` ready tasks that `caps` (comma-separated, '*' = any) can do to `agent`, best
-- first (priority, then age), straight to running, after reclaiming expired leases (so agents keep a
-- board healthy with no captain running). Returns them in claim order, and the board-event tip when
-- it took fewer than `count` (nil otherwise).
local function claim_one(t, agent, lease_ms)
  hand_out(t, agent, lease_ms, 'running')
  emit(t, 'claimed', '')
end

local function claim_ready(agent, caps, lease_ms, count, speak)
  reclaim_expired(100)
  local stopped = budget_stop(agent)
  if stopped then return {}, events_tip(), stopped end
  local can, any = parse_caps(caps)
  local paused = paused_kinds()
  local claimed = {}
  local offset = 0
  -- Looking is bounded: a long queue of work this agent cannot do must not keep Redis busy; what
  -- lies further back is found by the captain, or once the head of the queue moves.
  batch_begin()  -- claimed tasks leave the queue at batch_end: until then, paging skips past them
  while #claimed < count and offset < CLAIM_SCAN do
    local ids = redis.call('ZRANGE', key('ready'), offset, offset + 99)
    if #ids == 0 then break end
    offset = offset + #ids
    for _, id in ipairs(ids) do
      local t = load(id)
      if not t or t.state ~= 'open' then
        index('ZREM', key('ready'), id)  -- only open tasks belong here; never hand out another
      elseif fits(t, can, any, paused) then
        claim_one(t, agent, lease_ms)
        claimed[#claimed + 1] = t
        if #claimed == count then break end
      end
    end
  end
  batch_end()
  if speak then say_tasks(agent, 'working', 'working on', claimed) end
  if #claimed < count then return claimed, events_tip() end
  return claimed, nil
end

-- The idle hand-off's other half (see `idle_agents`): the tasks this call made ready (PENDING), best
-- first, each claimed for the first idle agent that can take it (capabilities, kind not paused,
-- budget left, a slot left of those it announced) exactly as `claim_ready` claims, then pushed onto
-- that agent's handoff list (the task as a claim returns it, JSON) in one RPUSH per agent. An agent
-- whose slots ran out stops idling. Runs only when no batch is open (batch_end runs it again).
offer_pending = function()
  if #PENDING == 0 or BATCH then return end
  local pending = PENDING
  PENDING = {}
  local idle = idle_agents()
  if not idle then return end
  if #pending > 1 then table.sort(pending, function(a, b) return score(a) < score(b) end) end
  local paused = paused_kinds()
  local stopped = {}  -- agent -> its budget's reason, or false
  local touched = {}
  batch_begin()
  for _, t in ipairs(pending) do
    if t.state == 'open' then  -- (still: nothing since has taken it)
      for _, a in ipairs(idle) do
        if a.slots > 0 and fits(t, a.can, a.any, paused) then
          if stopped[a.agent] == nil then stopped[a.agent] = budget_stop(a.agent) or false end
          if not stopped[a.agent] then
            claim_one(t, a.agent, a.lease)
            a.slots = a.slots - 1
            if #a.handed == 0 then touched[#touched + 1] = a end
            a.handed[#a.handed + 1] = t
            break
          end
        end
      end
    end
  end
  batch_end()
  for _, a in ipairs(touched) do
    local list = key('handoff:', a.agent)
    local entries = {}
    for i, t in ipairs(a.handed) do entries[i] = cjson.encode(t) end
    send('RPUSH', list, entries)
    -- Never taken (its agent died waiting): the tasks come back through their leases or the
    -- presence reaper, which also deletes the list; this only bounds the garbage.
    redis.call('PEXPIRE', list, a.lease)
    if a.slots > 0 then
      redis.call('HSET', key('idle:ask'), a.agent, a.slots .. ',' .. a.lease .. ',' .. (a.speak and '1' or '0') .. ',' ..
        a.caps)
    else
      redis.call('ZREM', key('idle:until'), a.agent)
      redis.call('HDEL', key('idle:ask'), a.agent)
    end
    if a.speak then say_tasks(a.agent, 'working', 'working on', a.handed) end
    a.handed = {}
  end
end

-- The tasks handed to `agent` that it has not popped yet, its handoff list emptied: those still its
-- own (running, owned by it, with the token they were handed with), in the order handed.
local function take_handed(agent)
  local list = key('handoff:', agent)
  local raw = redis.call('LRANGE', list, 0, -1)
  if #raw == 0 then return {} end
  redis.call('DEL', list)
  local out = {}
  for _, entry in ipairs(raw) do
    local readable, h = pcall(cjson.decode, entry)
    local t = readable and type(h) == 'table' and load(tostring(h.id)) or nil
    if t and t.state == 'running' and t.owner == agent and t.token == h.token then out[#out + 1] = t end
  end
  return out
end

-- `agent` waits for a hand-off of up to `slots` tasks until `until_ms`. Entries of agents that
-- stopped waiting without a word (killed, cut off) lapse by their time; a few are swept here.
local function idle_wait(agent, caps, lease_ms, slots, speak, until_ms)
  redis.call('ZADD', key('idle:until'), until_ms, agent)
  redis.call('HSET', key('idle:ask'), agent, slots .. ',' .. math.floor(lease_ms) .. ',' .. (speak and '1' or '0') ..
    ',' .. caps)
  local lapsed = redis.call('ZRANGEBYSCORE', key('idle:until'), '-inf', NOW, 'LIMIT', 0, 16)
  if #lapsed > 0 then
    redis.call('ZREM', key('idle:until'), unpack(lapsed))
    redis.call('HDEL', key('idle:ask'), unpack(lapsed))
  end
  IDLE = nil
end

-- What an agent's claim or settle takes: first what was handed to it while it waited (take_handed),
-- then ready tasks (claim_ready), `count` in all (more when more were handed: they are its own
-- already). `wait_ms` > 0 (claim): when that came to fewer than `count`, the agent waits for a
-- hand-off of the rest for `wait_ms` from now. `wait_ms` = 0 (settle): a wait still running is kept,
-- for the slots still free, or ended when none are. Returns the tasks, the tip and the budget's
-- reason as claim_ready does.
local function take_work(agent, caps, lease_ms, count, speak, wait_ms)
  local waiting = tonumber(redis.call('ZSCORE', key('idle:until'), agent) or '0')
  if waiting > 0 then stop_idling(agent) end  -- (nothing below is handed to itself)
  local tasks = take_handed(agent)
  local claimed, tip, stopped = claim_ready(agent, caps, lease_ms, math.max(0, count - #tasks), speak)
  for _, t in ipairs(claimed) do tasks[#tasks + 1] = t end
  local left = count - #tasks
  local until_ms = waiting
  if wait_ms > 0 then until_ms = NOW + wait_ms end
  if left > 0 and not stopped and until_ms > NOW then
    idle_wait(agent, caps, lease_ms, left, speak, until_ms)
  end
  return tasks, tip, stopped
end

-- done, as the owner reports it: the result recorded, affinity noted, dependents released (the
-- caller says the owner's "done" status, once for all it completed).
local function complete(t, result)
  local owner = t.owner
  finish(t, 'done', 'result', result, 'done')
  for file in string.gmatch(t.files, '[^\n]+') do index('SADD', key('affinity:', owner), file) end
  release_dependents(t)
end

-- Is `epoch` ('' = no check) still the leader's? An error reply when it is not.

-- What assign and assign_many check first, before any write: the lease argument (ARGV[lease_i]) and
-- that `epoch` still leads; an error reply when not. Then backed-off tasks whose time came are made
-- ready, so they can be assigned.

-- Give task `id` to `agent` (from its current owner with `force`) in `state`: `assigned` (the agent
-- starts it with `own start`) or `running` (the captain's rounds: handed out started, as a claim
-- does). The caller writes the assignment message (`send_assignments`) in the same step. Returns the
-- task, or nil and an error reply.
local ASSIGN_STOPS, ASSIGN_PAUSED = {}, nil  -- what assign_one asked of budgets and pauses in this call
local function assign_one(id, agent, lease_ms, force, state)
  local t = load(id)
  if not t then return nil, not_found(id) end
  local event = 'assigned'
  if force and (t.state == 'assigned' or t.state == 'running') then
    if t.owner == agent then
      return nil, err('illegal', 'task ' .. id .. ' is already ' .. t.state .. ' by ' .. agent)
    end
    event = 'reassigned'
  elseif t.state ~= 'open' then
    local hint = ''
    if t.state == 'assigned' or t.state == 'running' then hint = '; use reassign to move it' end
    return nil, err('illegal', 'task ' .. id .. ' is ' .. t.state .. (t.owner ~= '' and (' by ' .. t.owner) or '') ..
      ', not open' .. hint)
  else
    -- Asked once per agent and call (nothing an assignment does spends a budget or pauses a kind).
    local stopped = ASSIGN_STOPS[agent]
    if stopped == nil then
      stopped = budget_stop(agent) or false
      ASSIGN_STOPS[agent] = stopped
    end
    ASSIGN_PAUSED = ASSIGN_PAUSED or paused_kinds()
    if stopped then
      return nil, err('not_ready', 'task ' .. id .. ' cannot go to ' .. agent .. ': ' .. stopped)
    elseif ASSIGN_PAUSED[t.kind] then
      return nil, err('not_ready', 'task ' .. id .. ' is of kind ' .. t.kind .. ', which is paused; `swarm resume ' ..
        t.kind .. '` lets it be assigned')
    elseif redis.call('ZSCORE', key('ready'), id) == false then
      if tonumber(t.deps_left) > 0 then
        return nil, err('not_ready', 'task ' .. id .. ' waits on ' .. t.deps_left .. ' unfinished blocked-by task(s)')
      end
      return nil, err('not_ready', 'task ' .. id .. ' is backing off until ' .. t.not_before .. ' (ms) after a failure')
    end
  end
  local previous = t.owner
  hand_out(t, agent, lease_ms, state)
  local detail = ''
  if previous ~= '' then detail = 'from ' .. previous end
  emit(t, event, detail)
  return t, nil
end

-- An assignment message's size is kept under its caller's budget (bytes, under the readers' message
-- size limit): a hand-out of more tasks than fit goes to the agent as several messages.

-- A task as an assignment carries it: its fields but the empty ones (a reader takes a missing field
-- as empty), and the most that takes encoded in JSON (cjson writes at most 6 bytes for a byte of text).

-- Tell `agent` (instance `instance`, '' = any) about the tasks `ts` just handed to it in `state`, in
-- as few `assignment` messages to its inbox as fit: the first task in the body's own fields, the
-- rest in `more` (with `running`, each message with the agent's "working on" status, as a claim
-- writes it); with `inline`, the tasks themselves too (`tasks`, the hashes as a claim returns
-- them), so the agent runs them without reading them, in every message they fit in. `msg_id` names
-- the first message ('' = the call's next id); `budget`: the most bytes a message takes.

-- assigned -> running, the lease renewed (the caller says the owner's "working on"). An error
-- reply when the task is not assigned (the token was checked by the caller).

-- check_spec's field checks: nil when spec[name] is (made) right, else the `invalid` reply. A string
-- field left out is '' (a required one must not be); a whole number left out takes its default.


-- A task spec (a decoded JSON object, see create.lua) checked and completed with its defaults, or
-- nil and the `invalid` (or `not_found`) reply. Nothing is written: a batch checks every spec first.
-- (Plain calls, no tables of field names: create_many checks 500 specs a call.)

-- Create the task a checked spec describes (or return the task its dedup key already names): the
-- task and whether it is new.
-- A busy agent's round trip: report every task it finished since its last call as done, then claim
-- up to `count` ready tasks for the slots that freed (first those the board handed it, as claim.lua
-- does; a wait for a hand-off goes on for the slots still free). Each report is fenced by its own
-- token; one refused (stale, or no longer running) does not stop the others.
-- ARGV[4]: agent  ARGV[5]: capabilities ('*' = any)  ARGV[6]: lease ms  ARGV[7]: tasks to claim
-- ARGV[8]: '1' to write the agent's status messages  ARGV[9..]: triples (task id, token, result)
-- Reply: {"ok": true, "done": [{"id": ..., "updated": ms} or {"id": ..., "error": code, "message": ...}],
--         "tasks": [claimed tasks], "tip": events id when it claimed fewer than asked}
local forbidden = check_caller(ARGV[4])
if forbidden then return forbidden end
local bad = invalid_numbers(6, 'lease ms', 7, 'count')
if bad then return bad end
local agent, speak = ARGV[4], ARGV[8] == '1'
local completed = {}
local done = for_owned(9, 3, agent, load_for_report, function(t, i)
  complete(t, ARGV[i + 2])
  completed[#completed + 1] = t
  return {id = t.id, updated = tonumber(t.updated)}
end)
if speak then say_tasks(agent, 'done', 'done', completed) end
local claimed, tip, stopped = {}, nil, nil
if tonumber(ARGV[7]) > 0 then
  claimed, tip, stopped = take_work(agent, ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), speak, 0)
end
return cjson.encode({ok = true, done = done, tasks = claimed, tip = tip, budget = stopped})
