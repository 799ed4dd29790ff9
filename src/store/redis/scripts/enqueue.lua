-- Enqueue. KEYS[1] = full dedupe key. ARGV: prefix, dedupe TTL ms, group, payload.
-- Returns the new task id, or 0 for a duplicate.
-- Atomic because the dedupe key and the task must appear together: a crash or a concurrent
-- instance must never see the key without the task (an event lost) or the task without the
-- key (an event queued twice).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = now_ms()
local g = ARGV[3]
local id = redis.call('INCR', K_SEQ)
redis.call('SET', KEYS[1], struct.pack('>I8', id), 'PX', ARGV[2])
id = tostring(id)
redis.call('HSET', k_task(id), 'group', g, 'payload', ARGV[4], 'attempt', 0, 'enq', now,
  'nb', now, 'state', 'waiting')
redis.call('ZADD', K_TASKS, id, id)
redis.call('ZADD', k_group(g), id, id)
schedule(g, now)
return tonumber(id)
