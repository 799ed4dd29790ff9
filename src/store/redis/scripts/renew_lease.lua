-- Renew a lease (the worker's heartbeat). ARGV: prefix, id, lease token, lease ms.
-- Returns 1, or -2 when the lease is no longer held.
-- Atomic so a lease that ran out and was claimed by another instance is never extended
-- under the old token.
local id = ARGV[2]
local now = now_ms()
if not holds(id, ARGV[3], now) then return -2 end
redis.call('ZADD', K_LEASES, now + tonumber(ARGV[4]), id)
return 1
