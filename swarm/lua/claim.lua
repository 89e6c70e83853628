--!include board_lib
-- An agent takes the best ready tasks it is capable of: highest priority, then oldest, up to a
-- count. Atomic, so concurrent claimers never get the same task. Tasks go straight to `running`.
-- Expired leases are reclaimed first, so shell agents keep a board healthy with no captain running.
-- Tasks the board handed to the agent while it waited (its handoff list) come first.
-- ARGV[4]: agent  ARGV[5]: comma-separated capabilities ('*' = any)  ARGV[6]: lease ms
-- ARGV[7]: most tasks to claim  ARGV[8]: '1' to write the agent's "working on" status
-- ARGV[9] (optional; '' or '0' = none): ms to wait for a hand-off: when it took fewer than asked, the
-- agent is announced idle for the rest that long, and tasks made ready meanwhile are claimed for it
-- and pushed onto handoff:<agent> (it waits there with BLMPOP)
-- Reply: {"ok": true, "tasks": [...]} or {"ok": true, "empty": true}; "tip" (the board-event
-- stream's newest id) when it took fewer than asked: new work shows up as events after it.
local forbidden = check_caller(ARGV[4])
if forbidden then return forbidden end
if ARGV[9] == nil or ARGV[9] == '' then ARGV[9] = '0' end
local bad = invalid_numbers(6, 'lease ms', 7, 'count', 9, 'wait ms')
if bad then return bad end
local tasks, tip, stopped = take_work(ARGV[4], ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8] == '1',
  tonumber(ARGV[9]))
if #tasks == 0 then return cjson.encode({ok = true, empty = true, tip = tip, budget = stopped}) end
return cjson.encode({ok = true, tasks = tasks, tip = tip})
