--!include board_lib
-- Create a task, idempotently: a second create with the same dedup key returns the first task.
-- ARGV[4]: JSON spec {kind, title, body, priority, key, evidence, deps, caps, files, max_attempts,
-- not_before}; kind and title are required, the rest default (priority 5, max_attempts 3, caps =
-- kind, not_before 0: ready at once; a time in ms keeps it delayed until then).
local ok_json, spec = pcall(cjson.decode, ARGV[4])
if not ok_json then return err('invalid', 'the task spec is not a JSON object') end
local checked, bad = check_spec(spec)
if bad then return bad end
local t, created = create_task(checked)
return ok(t, {created = created})
