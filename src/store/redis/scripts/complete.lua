-- Complete. ARGV: prefix, id, lease token. Returns 1, or -2 when the lease is no longer
-- held (nothing changed).
-- Atomic because removing the task and scheduling its group's next task are one step: in
-- between, the group would have no active task and its next event would never run.
local id = ARGV[2]
local tk = k_task(id)
local g = redis.call('HGET', tk, 'group')
if not g or not holds(id, ARGV[3], now_ms()) then return -2 end
deactivate(id, g)
redis.call('DEL', tk)
redis.call('ZREM', K_TASKS, id)
redis.call('ZREM', k_group(g), id)
schedule(g, now_ms())
return 1
