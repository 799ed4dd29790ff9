-- Prepare the consumer group. ARGV: prefix, idle ms. Creates the stream and consumer group
-- if missing, and forgets consumers (instances that went away) idle longer than that with
-- nothing pending. Forgetting a live consumer is harmless: XREADGROUP recreates it on its
-- next claim.
-- Atomic so a consumer that claims meanwhile is not forgotten with an entry pending.
local ok = redis.pcall('XGROUP', 'CREATE', K_READY, CG, '0', 'MKSTREAM')
if type(ok) == 'table' and ok.err and not string.find(ok.err, 'BUSYGROUP') then
  return redis.error_reply(ok.err)
end
local forgotten = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', K_READY, CG)) do
  local f = {}
  for i = 1, #c, 2 do f[c[i]] = c[i + 1] end
  if tonumber(f['pending']) == 0 and tonumber(f['idle']) > tonumber(ARGV[2]) then
    redis.call('XGROUP', 'DELCONSUMER', K_READY, CG, f['name'])
    forgotten = forgotten + 1
  end
end
return forgotten
