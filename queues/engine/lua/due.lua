-- Move due delayed messages into their streams (topics nobody pulls from yet).
--
-- KEYS[2p-1], KEYS[2p]  stream and delay set of partition p
-- ARGV[1] now (ms)
-- Returns the number of messages moved. A partition whose stream is gone (the topic was
-- deleted since the caller looked it up) is left alone: never recreated.
local moved = 0
for p = 0, #KEYS / 2 - 1 do
  local stream, delay = KEYS[2 * p + 1], KEYS[2 * p + 2]
  local due = {}
  if redis.call('EXISTS', stream) == 1 then
    due = redis.call('ZRANGEBYSCORE', delay, '-inf', ARGV[1], 'LIMIT', 0, 1000)
  end
  for _, packed in ipairs(due) do
    redis.call('XADD', stream, '*', unpack(cmsgpack.unpack(packed)))
    redis.call('ZREM', delay, packed)
    moved = moved + 1
  end
end
return moved
