-- Delete a queue's stored messages by entry id, leased, waiting out a retry backoff or
-- neither, in one step: the entry, its pending entry (which holds its delivery count) and its
-- lease or retry.
--
-- KEYS[1] stream  KEYS[2] lease set  KEYS[3] retry set  KEYS[4] the queue's backlog hash
-- ARGV[1] the queue's consumer group, then the entry ids
-- Returns the number of entries deleted from the stream. An id the stream does not hold counts
-- 0 (a lease, retry or pending entry left of it goes all the same). The delay set is not
-- touched: its messages are not in the stream yet, so no entry id names them. Every command
-- here only removes, so a queue deleted meanwhile is not recreated: it has nothing to delete.
local deleted, bytes = 0, 0
if redis.call('EXISTS', KEYS[2] .. ':fair') == 1 then  -- a fair queue's in-flight counts
  for i = 2, #ARGV do fair_release(KEYS[2], ARGV[i]) end
end
for i = 2, #ARGV do
  local found = redis.call('XRANGE', KEYS[1], ARGV[i], ARGV[i])
  if #found > 0 then bytes = bytes + entry_bytes(found[1][2]) end
end
for first = 2, #ARGV, 1000 do  -- unpack() is bounded by Lua's stack: 1,000 at a time
  local last = math.min(first + 999, #ARGV)
  redis.call('XACK', KEYS[1], ARGV[1], unpack(ARGV, first, last))
  redis.call('ZREM', KEYS[2], unpack(ARGV, first, last))
  redis.call('ZREM', KEYS[3], unpack(ARGV, first, last))
  deleted = deleted + redis.call('XDEL', KEYS[1], unpack(ARGV, first, last))
end
backlog_add(KEYS[4], -deleted, -bytes)
return deleted
