--!include board_lib
-- An agent instance whose connections are all gone is dead (see swarm/presence.py): it is marked
-- gone and its tasks go back to open (or failed on their last attempt) in one step. Nothing happens
-- when a newer instance of the name registered meanwhile (its identity key, written by register,
-- names another instance) or the agent already left (deregistered).
-- ARGV[4]: agent name  ARGV[5]: instance id
-- Reply: {"ok": true, "moved": [ids]}
local forbidden = check_caller('@captain')
if forbidden then return forbidden end
local agent, instance = ARGV[4], ARGV[5]
local holder = redis.call('GET', key('identity:', agent)) or redis.call('HGET', key('agents'), agent)
local seen = tonumber(redis.call('ZSCORE', key('agents:seen'), agent) or '0')
local readable, parsed = pcall(cjson.decode, holder or '')
if not readable or type(parsed) ~= 'table' or seen == 0 or parsed.instance ~= instance then
  return cjson.encode({ok = true, moved = {}})
end
redis.call('ZADD', key('agents:seen'), 0, agent)
return cjson.encode({ok = true, moved = lose_all(agent, 'connections of ' .. agent .. ' closed')})
