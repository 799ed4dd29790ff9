-- Quarantine a payload. ARGV: prefix, entry JSON (without id). Returns the new id.
-- Atomic so an id is never handed out without its entry.
local P = ARGV[1]
local id = redis.call('INCR', P .. '{{QUARANTINE_SEQ}}')
redis.call('HSET', P .. '{{QUARANTINE_ENTRIES}}', id, ARGV[2])
redis.call('ZADD', P .. '{{QUARANTINE}}', id, id)
return id
