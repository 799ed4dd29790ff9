-- Retry now. ARGV: prefix. Makes every delayed head due now; returns how many were not
-- yet due.
-- Atomic so a head is never both delayed and in the stream (it would run twice).
local now = now_ms()
local delayed = redis.call('ZRANGE', K_DELAYED, 0, -1, 'WITHSCORES')
local n = 0
for i = 1, #delayed, 2 do
  local id = delayed[i]
  if tonumber(delayed[i + 1]) > now then n = n + 1 end
  redis.call('ZREM', K_DELAYED, id)
  redis.call('HSET', k_task(id), 'nb', now)
  xadd(id)
end
return n
