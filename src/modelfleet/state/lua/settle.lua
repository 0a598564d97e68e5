-- A request is done: free its in-flight lease and correct its token reservation to what it used.
-- KEYS: tokens window, in-flight leases, day tokens, month tokens; ARGV: second admitted, delta, lease
local delta = tonumber(ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[3])
if delta ~= 0 then
  if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then redis.call('HINCRBY', KEYS[1], ARGV[1], delta) end
  if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCRBY', KEYS[3], delta) end
  if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('INCRBY', KEYS[4], delta) end
end
return 1
