-- Append to the call log. ARGV: prefix, call date ms, E.164 or "", manager id or "",
-- entry JSON.
-- Atomic so the sequence, the index, the entry and last-talked move together, and the
-- newest-by-call-date comparison of last-talked cannot race another instance.
local P = ARGV[1]
local seq = redis.call('INCR', P .. '{{CALL_LOG_SEQ}}')
local member = string.format('%020d', seq)
redis.call('ZADD', P .. '{{CALL_LOG}}', ARGV[2], member)
redis.call('HSET', P .. '{{CALL_LOG_ENTRIES}}', member, ARGV[5])
if ARGV[3] ~= '' and ARGV[4] ~= '' then
  local k = P .. '{{LAST_TALKED}}'
  local cur = redis.call('HGET', k, ARGV[3])
  local date = tonumber(ARGV[2])
  if (not cur) or tonumber(string.match(cur, '^(-?%d+):')) <= date then
    redis.call('HSET', k, ARGV[3], ARGV[2] .. ':' .. ARGV[4])
  end
end
return 1
