-- Admit a batch of one team's requests, in order: each passes every limit or is told which refuses it.
-- Atomic: Redis runs one script at a time. The windows and budgets are read once per batch, not per request.
-- KEYS: requests window, tokens window, in-flight leases, day tokens, month tokens
-- ARGV: now, lease_ttl, rpm, tpm, concurrency, per_day, per_month, day_ttl, month_ttl, window, then for each
-- request: tokens, lease (a limit of 0 is no limit). Returns, for each request in turn, five values:
-- ok, limit, retry_after, remaining_requests, remaining_tokens; numbers as strings (-1 = unknown), since
-- Redis would truncate Lua numbers to integers.
local now = tonumber(ARGV[1]); local sec = math.floor(now); local ttl = tonumber(ARGV[2])
local rpm, tpm, conc = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local per_day, per_month = tonumber(ARGV[6]), tonumber(ARGV[7])
local day_ttl, month_ttl = ARGV[8], ARGV[9]
local W = tonumber(ARGV[10])

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

redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)  -- leases of crashed gateways expire
local inflight = conc > 0 and redis.call('ZCARD', KEYS[3]) or 0
local requests, req_oldest, tokens_used, tok_oldest = 0, sec, 0, sec
if rpm > 0 then requests, req_oldest = window(KEYS[1]) end
if tpm > 0 then tokens_used, tok_oldest = window(KEYS[2]) end
local day = per_day > 0 and tonumber(redis.call('GET', KEYS[4]) or '0') or 0
local month = per_month > 0 and tonumber(redis.call('GET', KEYS[5]) or '0') or 0

local out, leases, admitted, reserved = {}, {}, 0, 0
local function verdict(ok, limit, retry, rem_req, rem_tok)
  local n = #out
  out[n + 1], out[n + 2], out[n + 3] = ok, limit, tostring(retry)
  out[n + 4], out[n + 5] = tostring(rem_req), tostring(rem_tok)
end
-- A refusal's tokens left is at least 0, as in counters.py: a team may have used more than it reserved.
local function left(n) return math.max(0, n) end

local function admit(tokens, lease)
  if conc > 0 and inflight >= conc then return verdict(0, 'concurrency', 1, -1, -1) end
  local rem_req, rem_tok = -1, -1
  if rpm > 0 then
    if requests + 1 > rpm then return verdict(0, 'rpm', req_oldest + W - now, 0, -1) end
    rem_req = rpm - requests - 1
  end
  if tpm > 0 then
    if tokens_used + tokens > tpm then
      return verdict(0, 'tpm', tok_oldest + W - now, rem_req, left(tpm - tokens_used))
    end
    rem_tok = tpm - tokens_used - tokens
  end
  if per_day > 0 then
    if day + tokens > per_day then return verdict(0, 'tokens_per_day', day_ttl, rem_req, left(per_day - day)) end
    if rem_tok < 0 or per_day - day - tokens < rem_tok then rem_tok = per_day - day - tokens end
  end
  if per_month > 0 then
    if month + tokens > per_month then
      return verdict(0, 'tokens_per_month', month_ttl, rem_req, left(per_month - month))
    end
    if rem_tok < 0 or per_month - month - tokens < rem_tok then rem_tok = per_month - month - tokens end
  end
  -- Every limit passed: count it, so the next request of the batch sees it.
  inflight, requests, tokens_used = inflight + 1, requests + 1, tokens_used + tokens
  day, month = day + tokens, month + tokens
  admitted, reserved = admitted + 1, reserved + tokens
  leases[#leases + 1] = now + ttl; leases[#leases + 1] = lease
  return verdict(1, '', 0, rem_req, rem_tok)
end

for i = 11, #ARGV, 2 do admit(tonumber(ARGV[i]), ARGV[i + 1]) end

-- Write what the batch admitted, once.
-- Every admission holds a lease, limited or not: settle.lua corrects only what a live lease admitted,
-- which makes a settlement safe to send again.
if admitted > 0 then
  redis.call('ZADD', KEYS[3], unpack(leases))
  if rpm > 0 then redis.call('HINCRBY', KEYS[1], sec, admitted); redis.call('EXPIRE', KEYS[1], W + 1) end
  if tpm > 0 then redis.call('HINCRBY', KEYS[2], sec, reserved); redis.call('EXPIRE', KEYS[2], W + 1) end
  if per_day > 0 then redis.call('INCRBY', KEYS[4], reserved); redis.call('EXPIRE', KEYS[4], 2 * 86400) end
  if per_month > 0 then redis.call('INCRBY', KEYS[5], reserved); redis.call('EXPIRE', KEYS[5], 32 * 86400) end
end
return out
