-- Replay a dead letter. ARGV: prefix, id. Returns 1 if a dead letter went back to the
-- queue, 0 if there was none.
-- Atomic for the same reason as dead_letter.lua, the other way round.
local id = ARGV[2]
local dk = k_dead(id)
local f = redis.call('HMGET', dk, 'group', 'payload', 'enq', 'err')
if not f[1] then return 0 end
local g = f[1]
local now = now_ms()
local tk = k_task(id)
redis.call('HSET', tk, 'group', g, 'payload', f[2], 'attempt', 0, 'enq', f[3], 'nb', now,
  'state', 'waiting')
if f[4] then redis.call('HSET', tk, 'err', f[4]) end
redis.call('ZADD', K_TASKS, id, id)
redis.call('ZADD', k_group(g), id, id)
redis.call('DEL', dk)
redis.call('ZREM', K_DEAD, id)
schedule(g, now)
return 1
