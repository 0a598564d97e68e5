-- Admit one request for one team, or say which limit refuses it. Atomic: Redis runs one script at a time.
-- KEYS: requests window, tokens window, in-flight leases, day tokens, month tokens
-- ARGV: now, tokens, lease, lease_ttl, rpm, tpm, concurrency, per_day, per_month, day_ttl, month_ttl, window
-- (a limit of 0 is no limit). Returns {ok, limit, retry_after, remaining_requests, remaining_tokens}
-- as strings (-1 = unknown), since Redis would truncate Lua numbers to integers.
local now = tonumber(ARGV[1]); local sec = math.floor(now); local tokens = tonumber(ARGV[2])
local rpm, tpm, conc = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local per_day, per_month = tonumber(ARGV[8]), tonumber(ARGV[9])
local W = tonumber(ARGV[12])

-- A minute window is a hash of one-second buckets; old buckets are dropped as they are read.
local function window(key)
  local h = redis.call('HGETALL', key); local total = 0; local oldest = sec
  for i = 1, #h, 2 do
    local s = tonumber(h[i])
    if s <= sec - W then
      redis.call('HDEL', key, h[i])
    else
      total = total + tonumber(h[i + 1])
      if s < oldest then oldest = s end
    end
  end
  return total, oldest
end

local function refuse(limit, retry, rem_req, rem_tok)
  return {0, limit, tostring(retry), tostring(rem_req), tostring(rem_tok)}
end

redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)  -- leases of crashed gateways expire
if conc > 0 and redis.call('ZCARD', KEYS[3]) >= conc then return refuse('concurrency', 1, -1, -1) end
local rem_req, rem_tok = -1, -1
if rpm > 0 then
  local used, oldest = window(KEYS[1])
  if used + 1 > rpm then return refuse('rpm', oldest + W - now, 0, -1) end
  rem_req = rpm - used - 1
end
if tpm > 0 then
  local used, oldest = window(KEYS[2])
  if used + tokens > tpm then return refuse('tpm', oldest + W - now, rem_req, tpm - used) end
  rem_tok = tpm - used - tokens
end
local function budget(key, limit, ttl_left, name)
  if limit <= 0 then return nil end
  local used = tonumber(redis.call('GET', key) or '0')
  if used + tokens > limit then return refuse(name, ttl_left, rem_req, limit - used) end
  if rem_tok < 0 or limit - used - tokens < rem_tok then rem_tok = limit - used - tokens end
  return nil
end
local refused = budget(KEYS[4], per_day, ARGV[10], 'tokens_per_day') or budget(KEYS[5], per_month, ARGV[11], 'tokens_per_month')
if refused then return refused end

-- Every limit passed: count it all now.
-- Every admission holds a lease, limited or not: settle.lua corrects only what a live lease admitted,
-- which makes a settlement safe to send again.
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[4]), ARGV[3])
if rpm > 0 then redis.call('HINCRBY', KEYS[1], sec, 1); redis.call('EXPIRE', KEYS[1], W + 1) end
if tpm > 0 then redis.call('HINCRBY', KEYS[2], sec, tokens); redis.call('EXPIRE', KEYS[2], W + 1) end
if per_day > 0 then redis.call('INCRBY', KEYS[4], tokens); redis.call('EXPIRE', KEYS[4], 2 * 86400) end
if per_month > 0 then redis.call('INCRBY', KEYS[5], tokens); redis.call('EXPIRE', KEYS[5], 32 * 86400) end
return {1, '', '0', tostring(rem_req), tostring(rem_tok)}
