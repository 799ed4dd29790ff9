-- Complete. ARGV: prefix, id. Returns 1 if the task existed, 0 otherwise (idempotent).
-- Atomic because removing the task and scheduling its group's next task are one step: in
-- between, the group would have no active task and its next event would never run.
local id = ARGV[2]
local tk = k_task(id)
local g = redis.call('HGET', tk, 'group')
if not g then return 0 end
deactivate(id, g)
redis.call('DEL', tk)
redis.call('ZREM', K_TASKS, id)
redis.call('ZREM', k_group(g), id)
schedule(g, now_ms())
return 1
