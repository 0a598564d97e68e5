-- A request is done: free its in-flight lease and correct its token reservation to what it used.
-- KEYS: tokens window, in-flight leases, day tokens, month tokens; ARGV: second admitted, delta, lease
-- Idempotent: without its lease (settled already, expired, or never admitted) nothing is corrected, so a
-- settlement whose reply was lost can be sent again, and so can the undo of an admission whose reply was.
if redis.call('ZREM', KEYS[2], ARGV[3]) == 0 then return 0 end
local delta = tonumber(ARGV[2])
if delta ~= 0 then
  if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then redis.call('HINCRBY', KEYS[1], ARGV[1], delta) end
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCRBY', KEYS[3], delta) end
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('INCRBY', KEYS[4], delta) end
end
return 1
