-- Reschedule / postpone. ARGV: prefix, id, delay ms[, error]. With an error: a failed
-- attempt (counted, error kept); without: postponed (attempt and last error unchanged).
-- Returns 1, or -1 for an unknown task.
-- Atomic because the task leaves the stream and becomes delayed in one step: no other
-- instance may claim it in between, nor may it be lost from both.
local id = ARGV[2]
local tk = k_task(id)
local g = redis.call('HGET', tk, 'group')
if not g then return -1 end
local now = now_ms()
deactivate(id, g)
if ARGV[4] then
  redis.call('HINCRBY', tk, 'attempt', 1)
  redis.call('HSET', tk, 'err', ARGV[4])
end
redis.call('HSET', tk, 'nb', now + tonumber(ARGV[3]))
schedule(g, now)
return 1
