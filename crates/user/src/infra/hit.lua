-- Fixed-window hit counter. KEYS[1]: counter; ARGV[1]: max; ARGV[2]: window ms.
-- Returns 0 when within the limit, else the milliseconds until the window resets.
local value = redis.call('INCR', KEYS[1])
if value == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
if value > tonumber(ARGV[1]) then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 1 then ttl = 1 end
  return ttl
end
return 0
