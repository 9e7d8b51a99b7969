-- Settle or release a reservation once (the marker makes it idempotent).
-- KEYS[1]: marker; KEYS[2..]: token counters then request counters.
-- ARGV[1]: delta applied to token counters; ARGV[2]: number of token counters;
-- ARGV[3]: delta applied to request counters.
if redis.call('DEL', KEYS[1]) == 0 then
  return 0
end
local tokens = tonumber(ARGV[2])
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if i <= tokens + 1 then
      redis.call('INCRBY', KEYS[i], ARGV[1])
    else
      redis.call('INCRBY', KEYS[i], ARGV[3])
    end
  end
end
return 1
