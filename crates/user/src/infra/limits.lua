-- Atomic admission: check every rule, then charge them all, or charge nothing.
-- KEYS[1..n]: counters; KEYS[n+1]: the reservation marker; KEYS[n+2]: the shard's deadlines.
-- ARGV: for each counter i: max, cost, ttl_ms, durable (1/0); then the marker's ttl_ms, the
-- reservation's deadline (Unix ms), its id, its token estimate and how many of the counters
-- (the first ones) count tokens.
-- The marker is a hash of what to give back if the reservation is never settled (`s` = 'h':
-- held): the sweeper releases it once its deadline in the shard's sorted set has passed.
-- Returns {0, tightest_index, tightest_remaining} when admitted,
--         {1, index, current} when rule `index` refuses,
--         {2, index, 0} when durable counter `index` must first be rebuilt from the ledger.
local n = #KEYS - 2
for i = 1, n do
  local base = (i - 1) * 4
  local max = tonumber(ARGV[base + 1])
  local cost = tonumber(ARGV[base + 2])
  local current = redis.call('GET', KEYS[i])
  if current == false then
    if ARGV[base + 4] == '1' then
      return {2, i, 0}
    end
    current = 0
  else
    current = tonumber(current)
  end
  -- A zero-cost check still needs one unit of headroom: a spent quota refuses everything.
  local need = cost
  if need == 0 then need = 1 end
  if current + need > max then
    return {1, i, current}
  end
end
local tightest, remaining = 0, -1
for i = 1, n do
  local base = (i - 1) * 4
  local value = redis.call('INCRBY', KEYS[i], ARGV[base + 2])
  if redis.call('PTTL', KEYS[i]) < 0 then
    redis.call('PEXPIRE', KEYS[i], ARGV[base + 3])
  end
  local left = tonumber(ARGV[base + 1]) - value
  if remaining < 0 or left < remaining then
    tightest, remaining = i, left
  end
end
local at = n * 4
local marker = {'s', 'h', 'e', ARGV[at + 4], 't', ARGV[at + 5], 'n', n}
for i = 1, n do
  marker[#marker + 1] = 'c' .. i
  marker[#marker + 1] = KEYS[i]
end
redis.call('HSET', KEYS[n + 1], unpack(marker))
redis.call('PEXPIRE', KEYS[n + 1], ARGV[at + 1])
redis.call('ZADD', KEYS[n + 2], ARGV[at + 2], ARGV[at + 3])
return {0, tightest, remaining}
