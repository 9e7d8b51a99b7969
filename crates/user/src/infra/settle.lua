-- Ends a reservation and records it durably, in one atomic step; or, for the sweeper, gives
-- back a reservation whose process died before ending it.
-- KEYS[1]: the marker; KEYS[2]: the shard's deadlines; KEYS[3]: the shard's settlement stream;
-- KEYS[4..]: token counters, then request counters.
-- ARGV[1]: reservation id; ARGV[2]: how many counters count tokens;
-- ARGV[3], ARGV[4]: token and request deltas while the reservation is held;
-- ARGV[5], ARGV[6]: the same once the sweeper released it (it gave the estimate back: a late
-- settlement charges in full, a late release charges nothing);
-- ARGV[7]: 'end' (settle or release) or 'sweep';
-- ARGV[8..]: field/value pairs of the stream entry to append when ending (none: append nothing).
-- The marker's field `s` is 'h' while held and 'x' once swept; a marker that is gone was ended
-- already, and ending it again changes nothing.
-- Returns 1 when the reservation was held, 2 when it had been swept, 0 when it was gone.
local state = redis.call('HGET', KEYS[1], 's')
local function apply(tokens_delta, requests_delta)
  local tokens = tonumber(ARGV[2])
  for i = 4, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      if i <= tokens + 3 then
        redis.call('INCRBY', KEYS[i], tokens_delta)
      else
        redis.call('INCRBY', KEYS[i], requests_delta)
      end
    end
  end
end
if ARGV[7] == 'sweep' then
  redis.call('ZREM', KEYS[2], ARGV[1])
  if state ~= 'h' then
    return 0
  end
  apply(ARGV[3], ARGV[4])
  redis.call('HSET', KEYS[1], 's', 'x')
  return 1
end
if state == false then
  return 0
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local result = 1
if state == 'h' then
  apply(ARGV[3], ARGV[4])
else
  apply(ARGV[5], ARGV[6])
  result = 2
end
if #ARGV > 7 then
  redis.call('XADD', KEYS[3], '*', unpack(ARGV, 8))
end
return result
