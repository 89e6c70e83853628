--!include board_lib
-- An agent instance registers: its card is written and it is seen now. Any task its name still owns
-- belonged to an earlier instance (dead, or about to learn it was replaced): each goes back to open
-- (or failed on its last attempt) in the same step, so the new instance starts clean and the work
-- need not wait for a lease.
-- ARGV[4]: agent name  ARGV[5]: instance id  ARGV[6]: the card (JSON)
-- The name's holder (instance and connection name) goes to its identity key, which under ACL users
-- only this agent's user (and a captain's) may write: heartbeats, deregistration, presence and reap
-- trust it, not the card, so a raw write over the card (agents may write the agents hash) neither
-- stops the agent nor gets it reaped; its next heartbeat writes its card back.
-- Reply: {"ok": true, "moved": [ids]}
local forbidden = check_caller(ARGV[4])
if forbidden then return forbidden end
local agent, instance, card = ARGV[4], ARGV[5], ARGV[6]
local moved = lose_all(agent, 'owner ' .. agent .. ' restarted (instance ' .. instance .. ' registered)')
redis.call('HSET', key('agents'), agent, card)
local readable, parsed = pcall(cjson.decode, card)
if not readable or type(parsed) ~= 'table' then parsed = {} end
redis.call('SET', key('identity:', agent),
  cjson.encode({instance = instance, connection = type(parsed.connection) == 'string' and parsed.connection or ''}))
-- Its budget (the card's budget_usd) is enforced by the board from now on (see budget_stop).
if type(parsed.budget_usd) == 'number' then
  redis.call('HSET', key('budget'), 'agent:' .. agent, parsed.budget_usd)
else
  redis.call('HDEL', key('budget'), 'agent:' .. agent)
end
redis.call('ZADD', key('agents:seen'), NOW, agent)
return cjson.encode({ok = true, moved = moved})
