-- Shared helpers, prepended to every queue script. ARGV[1] is always the key prefix.
-- Key names (written as NAME in double braces) are spliced in from the consts of
-- src/store/redis/mod.rs when the scripts are loaded, so each key is named once.
local P = ARGV[1]
local K_SEQ = P .. '{{Q_SEQ}}'
local K_TASKS = P .. '{{Q_TASKS}}'
local K_ACTIVE = P .. '{{Q_ACTIVE}}'
local K_READY = P .. '{{Q_READY}}'
local K_LEASES = P .. '{{Q_LEASES}}'
local K_DELAYED = P .. '{{Q_DELAYED}}'
local K_DEAD = P .. '{{Q_DEAD}}'
local K_LEASE_SEQ = P .. '{{Q_LEASE_SEQ}}'
local CG = '{{Q_CONSUMER_GROUP}}'
local function k_task(id) return P .. '{{Q_TASK}}' .. id end
local function k_group(g) return P .. '{{Q_GROUP}}' .. g end
local function k_dead(id) return P .. '{{Q_DEAD_ENTRY}}' .. id end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function xadd(id)
  local sid = redis.call('XADD', K_READY, '*', 'id', id)
  redis.call('HSET', k_task(id), 'state', 'ready', 'sid', sid)
end
-- Takes task `id` of group `g` out of the stream, the leases and the delays, and frees the
-- group's active slot if it held it.
local function deactivate(id, g)
  local tk = k_task(id)
  local sid = redis.call('HGET', tk, 'sid')
  if sid then
    redis.pcall('XACK', K_READY, CG, sid)
    redis.call('XDEL', K_READY, sid)
    redis.call('HDEL', tk, 'sid')
  end
  redis.call('ZREM', K_LEASES, id)
  redis.call('ZREM', K_DELAYED, id)
  redis.call('HDEL', tk, 'lease')
  if redis.call('EXISTS', tk) == 1 then redis.call('HSET', tk, 'state', 'waiting') end
  if redis.call('HGET', K_ACTIVE, g) == id then redis.call('HDEL', K_ACTIVE, g) end
end
-- Makes the head of group `g` ready or delayed, unless a task of the group is leased. A head
-- that is not the active task (a replayed dead letter with a lower id) displaces it.
local function schedule(g, now)
  local head = redis.call('ZRANGE', k_group(g), 0, 0)[1]
  local a = redis.call('HGET', K_ACTIVE, g)
  if a then
    if a == head then return end
    if redis.call('HGET', k_task(a), 'state') == 'leased' then return end
    deactivate(a, g)
  end
  if not head then return end
  local nb = tonumber(redis.call('HGET', k_task(head), 'nb') or '0')
  if nb > now then
    redis.call('ZADD', K_DELAYED, nb, head)
    redis.call('HSET', k_task(head), 'state', 'delayed')
  else
    xadd(head)
  end
  redis.call('HSET', K_ACTIVE, g, head)
end
-- Whether the lease `token` on task `id` is still held at `now`: the task is leased under
-- that token and its deadline has not passed (an expired lease is lost even before another
-- claim takes the task over).
local function holds(id, token, now)
  local tk = k_task(id)
  if redis.call('HGET', tk, 'state') ~= 'leased' then return false end
  if redis.call('HGET', tk, 'lease') ~= token then return false end
  local deadline = redis.call('ZSCORE', K_LEASES, id)
  return deadline ~= false and deadline ~= nil and tonumber(deadline) > now
end
