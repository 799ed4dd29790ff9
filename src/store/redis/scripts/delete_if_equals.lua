-- Compare-and-delete. KEYS[1] = key. ARGV: prefix, expected value. Returns 1 if deleted.
-- Atomic so a lock that expired and was taken by another owner is never deleted by its
-- previous owner.
if redis.call('GET', KEYS[1]) == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
