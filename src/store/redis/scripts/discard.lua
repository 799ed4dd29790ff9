-- Discard a dead letter for good (an operator decided it must not be applied). ARGV: prefix,
-- id. Returns 1 if a dead letter was deleted, 0 if there was none.
-- Atomic so the dead letter's record and its place in the dead-letter index go together.
local id = ARGV[2]
local removed = redis.call('DEL', k_dead(id))
redis.call('ZREM', K_DEAD, id)
return removed
