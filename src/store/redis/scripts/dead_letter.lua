-- Dead letter. ARGV: prefix, id, lease token, reason. Returns 1, or -2 when the lease is
-- no longer held (nothing changed).
-- Atomic because the task must be in exactly one of the queue and the dead letters, and its
-- group's next task must be scheduled in the same step.
local id = ARGV[2]
local tk = k_task(id)
local g = redis.call('HGET', tk, 'group')
local now = now_ms()
if not g or not holds(id, ARGV[3], now) then return -2 end
deactivate(id, g)
local f = redis.call('HMGET', tk, 'payload', 'attempt', 'enq', 'err')
local dk = k_dead(id)
redis.call('HSET', dk, 'group', g, 'payload', f[1], 'attempt', f[2], 'enq', f[3],
  'reason', ARGV[4], 'failed', now)
if f[4] then redis.call('HSET', dk, 'err', f[4]) end
redis.call('ZADD', K_DEAD, id, id)
redis.call('DEL', tk)
redis.call('ZREM', K_TASKS, id)
redis.call('ZREM', k_group(g), id)
schedule(g, now)
return 1
