-- Reposition a subscription's consumer group on every partition: everything at or before
-- the given id counts as acknowledged, everything after it is delivered (again). Leases and
-- retries in flight are dropped: their ack ids no longer settle anything.
--
-- KEYS[3p-2..3p]  stream, lease set, retry set of partition p (p = 1..P)
-- ARGV[1] consumer group   ARGV[2..P+1] the id to stand at, per partition ('$': the end)
-- Returns P, or -1 when the subscription is gone (a group is missing): then nothing changes.
local P = #KEYS / 3
if not consumer_alive(1, 3, P, ARGV[1], nil) then return -1 end
for p = 0, P - 1 do
  local stream = KEYS[3 * p + 1]
  redis.call('XGROUP', 'DESTROY', stream, ARGV[1])
  redis.call('XGROUP', 'CREATE', stream, ARGV[1], ARGV[p + 2])
  redis.call('DEL', KEYS[3 * p + 2], KEYS[3 * p + 3])
end
return P
