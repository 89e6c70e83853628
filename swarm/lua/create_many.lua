--!include board_lib
-- Create many tasks in one call, each as create.lua would (same checks, same dedup keys): every spec
-- is checked before the first write, so a batch with a bad spec creates nothing.
-- ARGV[4]: a JSON array of specs (create.lua's form)
-- Reply: {"ok": true, "tasks": [{"id": ..., "created": true|false}, ...]} in the order of the specs,
-- or the refusal of the first bad spec, its message starting with `spec <n>: ` (1-based).
local ok_json, specs = pcall(cjson.decode, ARGV[4])
if not ok_json or type(specs) ~= 'table' then return err('invalid', 'the task specs are not a JSON array') end
for n, spec in ipairs(specs) do
  local _, bad = check_spec(spec)
  if bad then
    local e = cjson.decode(bad)
    return err(e.error, 'spec ' .. n .. ': ' .. e.message)
  end
end
local out = {}
batch_begin()
for _, spec in ipairs(specs) do
  local t, created = create_task(spec)
  out[#out + 1] = {id = t.id, created = created}
end
batch_end()
return cjson.encode({ok = true, tasks = out})
