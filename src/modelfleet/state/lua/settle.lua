-- Requests are done: free each one's in-flight lease and correct its token reservation to what it used.
-- KEYS: tokens window, in-flight leases, day tokens, month tokens
-- ARGV: for each request: second admitted, delta, lease
-- Idempotent: without its lease (settled already, expired, or never admitted) nothing is corrected, so a
-- settlement whose reply was lost can be sent again, and so can the undo of an admission whose reply was.
local settled = 0
for i = 1, #ARGV, 3 do
  if redis.call('ZREM', KEYS[2], ARGV[i + 2]) == 1 then
    settled = settled + 1
    local delta = tonumber(ARGV[i + 1])
    if delta ~= 0 then
      if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then redis.call('HINCRBY', KEYS[1], ARGV[i], delta) end
      if redis.call('EXISTS', KEYS[3]) == 1 then redis.call('INCRBY', KEYS[3], delta) end
      if redis.call('EXISTS', KEYS[4]) == 1 then redis.call('INCRBY', KEYS[4], delta) end
    end
  end
end
return settled
