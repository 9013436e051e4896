-- Delete every message of a queue, keeping its consumer group and its offsets monotonic.
--
-- KEYS[1] stream  KEYS[2] delay set  KEYS[3] lease set  KEYS[4] retry set
-- KEYS[5] backlog hash (emptied with the rest; so are a fair queue's in-flight counts, kept
-- beside the lease set: see fair_take in _lib.lua)
-- ARGV[1] consumer group
-- Returns the number of messages removed (stored + delayed), or -1 when the queue is gone
-- (its group is missing): then nothing is changed or recreated.
if not group_exists(KEYS[1], ARGV[1]) then return -1 end
local count = redis.call('XLEN', KEYS[1]) + redis.call('ZCARD', KEYS[2])
local last = '0-0'
local info = redis.call('XINFO', 'STREAM', KEYS[1])
for i = 1, #info, 2 do
  if info[i] == 'last-generated-id' then last = info[i + 1] end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[3] .. ':fair', KEYS[3] .. ':fairn')
redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], last, 'MKSTREAM')
if last ~= '0-0' then redis.call('XSETID', KEYS[1], last) end
return count
