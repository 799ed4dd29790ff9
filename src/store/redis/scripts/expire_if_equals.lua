-- Compare-and-expire. KEYS[1] = key. ARGV: prefix, expected value, TTL ms. Returns 1 if
-- the key held the value and got the new TTL.
-- Atomic so a lock that expired and was taken by another owner is never renewed by its
-- previous owner.
if redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
