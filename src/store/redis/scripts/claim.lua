-- Claim. ARGV: prefix, lease ms, consumer name. Returns {id, group, payload, attempt, enq,
-- err, lease token} or nil; each lease gets a new token (see holds() in prelude.lua). Order: (1) an expired lease is taken over (XCLAIM), else (2) due retries
-- join the stream and (3) the next undelivered stream entry is read through the consumer
-- group and leased.
-- Atomic because two instances claiming at once must never both lease one task, and a
-- lease must be recorded in the same step as the read that hands the task out.
local now = now_ms()
local lease = tonumber(ARGV[2])
local consumer = ARGV[3]
local function lease_it(id)
  local tk = k_task(id)
  redis.call('ZADD', K_LEASES, now + lease, id)
  local token = redis.call('INCR', K_LEASE_SEQ)
  redis.call('HSET', tk, 'state', 'leased', 'lease', token)
  local f = redis.call('HMGET', tk, 'group', 'payload', 'attempt', 'enq', 'err')
  return {id, f[1], f[2], f[3], f[4], f[5], token}
end
-- 1. A lease that ran out: this consumer takes the pending entry over.
for _ = 1, {{STALE_LEASE_LIMIT}} do
  local id = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', now, 'LIMIT', 0, 1)[1]
  if not id then break end
  local sid = redis.call('HGET', k_task(id), 'sid')
  if sid then
    redis.pcall('XCLAIM', K_READY, CG, consumer, 0, sid)
    return lease_it(id)
  end
  redis.call('ZREM', K_LEASES, id)
end
-- 2. Due retries join the stream.
local due = redis.call('ZRANGEBYSCORE', K_DELAYED, '-inf', now, 'LIMIT', 0, {{PROMOTE_BATCH}})
for _, id in ipairs(due) do
  redis.call('ZREM', K_DELAYED, id)
  xadd(id)
end
-- 3. The next undelivered entry of the stream, through the consumer group.
for _ = 1, {{SKIP_LIMIT}} do
  local r = redis.pcall('XREADGROUP', 'GROUP', CG, consumer, 'COUNT', 1, 'STREAMS', K_READY, '>')
  if type(r) == 'table' and r.err then
    -- No stream or no group yet (fresh Redis, or the keys were deleted): create both.
    redis.call('XGROUP', 'CREATE', K_READY, CG, '0', 'MKSTREAM')
    r = redis.call('XREADGROUP', 'GROUP', CG, consumer, 'COUNT', 1, 'STREAMS', K_READY, '>')
  end
  if not r then return false end
  local entry = r[1][2][1]
  local sid, id = entry[1], entry[2][2]
  if redis.call('HGET', k_task(id), 'sid') == sid then return lease_it(id) end
  -- Stale (its task finished or moved meanwhile): drop it.
  redis.call('XACK', K_READY, CG, sid)
  redis.call('XDEL', K_READY, sid)
end
return false
