-- Acknowledges and removes committed entries of one shard's stream and counts them as drained,
-- atomically: a reader that dies after this call has both done, one that dies before has
-- neither. Only entries still pending count, so an entry two readers wrote counts once.
-- KEYS[1] the shard's stream, KEYS[2] its drained count (same hash tag).
-- ARGV[1] the consumer group, ARGV[2..] entry ids. Returns the number acknowledged.
local acked = 0
for i = 2, #ARGV do
  acked = acked + redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
if acked > 0 then
  redis.call('HINCRBY', KEYS[2], 'drained', acked)
end
return acked
