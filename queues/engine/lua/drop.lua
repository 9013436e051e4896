-- Delete a queue's, a topic's or a subscription's Redis structures in one atomic step, and
-- wake the long polls waiting on it (they pull again, find it gone and answer 404).
--
-- KEYS[1..n]   streams on which consumer group ARGV[2] is destroyed (a subscription's topic
--              partitions); the stream itself stays
-- KEYS[n+1..]  keys deleted whole (a queue's or a topic's streams, delay, lease, retry sets)
-- ARGV[1] channel to wake ('' none)   ARGV[2] consumer group ('' none)   ARGV[3] n
-- Returns the number of keys deleted. Every script that writes checks first that the structures
-- it writes to exist, so nothing can recreate them after this.
local n = tonumber(ARGV[3])
for i = 1, n do
  redis.pcall('XGROUP', 'DESTROY', KEYS[i], ARGV[2])
end
local deleted = 0
for first = n + 1, #KEYS, 1000 do  -- unpack() is bounded by Lua's stack: 1,000 at a time
  deleted = deleted + redis.call('DEL', unpack(KEYS, first, math.min(first + 999, #KEYS)))
end
if ARGV[1] ~= '' then redis.call('PUBLISH', ARGV[1], 'all') end
return deleted
