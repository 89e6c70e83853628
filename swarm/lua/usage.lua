--!include board_lib
-- The owner reports what its task used (model tokens, money): added to the task's, the agent's and
-- the swarm's spend. A task that has now spent its own budget (`budget_usd`, 0 = none) fails at
-- once with the reason and its token fenced off: its owner's handler is stopped (the reply says so,
-- and the next renewal is refused), and no retry is made of it.
-- ARGV[4]: agent  ARGV[5]: task id  ARGV[6]: token  ARGV[7]: tokens used  ARGV[8]: USD spent
-- Reply: {"ok": true, "task": {...}, "over_budget": true|false}
local forbidden = check_caller(ARGV[4])
if forbidden then return forbidden end
local bad = invalid_numbers(7, 'tokens', 8, 'usd')
if bad then return bad end
local agent, id, tokens, usd = ARGV[4], ARGV[5], tonumber(ARGV[7]), tonumber(ARGV[8])
if tokens < 0 or usd < 0 then return err('invalid', 'usage must not be negative, got ' .. ARGV[7] .. ' tokens, $' .. ARGV[8]) end
local t = load(id)
if not t then return not_found(id) end
local refused = check_owner(t, ARGV[6], agent)
if refused then return refused end
t.spent_usd = tostring(tonumber(t.spent_usd or '0') + usd)
t.tokens = tostring(math.floor(tonumber(t.tokens or '0') + tokens))
save(t, 'spent_usd', 'tokens')
redis.call('HINCRBYFLOAT', key('spend'), 'swarm', usd)
redis.call('HINCRBYFLOAT', key('spend'), 'agent:' .. agent, usd)
redis.call('HINCRBY', key('spend'), 'tokens:swarm', math.floor(tokens))
redis.call('HINCRBY', key('spend'), 'tokens:agent:' .. agent, math.floor(tokens))
local limit = tonumber(t.budget_usd or '0') or 0
if limit > 0 and tonumber(t.spent_usd) >= limit then
  revoke(t, 'failed', 'over budget: spent $' .. t.spent_usd .. ' of its $' .. t.budget_usd .. ' budget')
  return ok(t, {over_budget = true})
end
return ok(t, {over_budget = false})
