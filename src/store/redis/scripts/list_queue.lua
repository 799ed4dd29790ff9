-- List the queue. ARGV: prefix, limit. Unfinished tasks in id order:
-- {id, group, payload, attempt, enq, err}.
-- One script so the listing is a consistent snapshot and one round trip.
local out = {}
for _, id in ipairs(redis.call('ZRANGE', K_TASKS, 0, tonumber(ARGV[2]) - 1)) do
  local f = redis.call('HMGET', k_task(id), 'group', 'payload', 'attempt', 'enq', 'err')
  if f[1] then out[#out + 1] = {id, f[1], f[2], f[3], f[4], f[5]} end
end
return out
