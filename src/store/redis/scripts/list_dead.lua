-- List dead letters. ARGV: prefix, limit. Newest first:
-- {id, group, payload, attempt, enq, err, reason, failed}.
-- One script so the listing is a consistent snapshot and one round trip.
local out = {}
for _, id in ipairs(redis.call('ZREVRANGE', K_DEAD, 0, tonumber(ARGV[2]) - 1)) do
  local f = redis.call('HMGET', k_dead(id), 'group', 'payload', 'attempt', 'enq', 'err',
    'reason', 'failed')
  if f[1] then out[#out + 1] = {id, f[1], f[2], f[3], f[4], f[5], f[6], f[7]} end
end
return out
