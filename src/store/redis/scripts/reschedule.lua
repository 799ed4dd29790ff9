-- Reschedule / postpone. ARGV: prefix, id, lease token, delay ms[, error]. With an error: a failed
-- attempt (counted, error kept); without: postponed (attempt and last error unchanged).
-- Returns 1, or -2 when the lease is no longer held (nothing changed).
-- Atomic because the task leaves the stream and becomes delayed in one step: no other
-- instance may claim it in between, nor may it be lost from both.
local id = ARGV[2]
local tk = k_task(id)
local g = redis.call('HGET', tk, 'group')
local now = now_ms()
if not g or not holds(id, ARGV[3], now) then return -2 end
deactivate(id, g)
if ARGV[5] then
  redis.call('HINCRBY', tk, 'attempt', 1)
  redis.call('HSET', tk, 'err', ARGV[5])
end
redis.call('HSET', tk, 'nb', now + tonumber(ARGV[4]))
schedule(g, now)
return 1
