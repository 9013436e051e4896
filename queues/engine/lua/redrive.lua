-- Move dead letters back into a queue, oldest first, skipping any that are leased.
--
-- KEYS[1] dead-letter stream  KEYS[2] its lease set  KEYS[3] its retry set
-- KEYS[4] target stream  KEYS[5], KEYS[6] backlog hashes of the dead-letter and target queues
-- ARGV[1] the dead-letter queue's consumer group  ARGV[2] target channel to notify
-- then the entry ids to move.
-- The op-dead-letter-* attributes are removed; the message keeps its id. Returns the number
-- moved, or -1 when the target stream is gone (its queue was deleted): then nothing moves.
if redis.call('EXISTS', KEYS[4]) == 0 then return -1 end
local moved = 0
for i = 3, #ARGV do
  local id = ARGV[i]
  if not redis.call('ZSCORE', KEYS[2], id) and not redis.call('ZSCORE', KEYS[3], id) then
    local found = redis.call('XRANGE', KEYS[1], id, id)
    if #found > 0 then
      local fields = found[1][2]
      local out = {}
      for j = 1, #fields, 2 do
        local name, value = fields[j], fields[j + 1]
        if name == 'a' then
          local attrs = cjson.decode(value)
          attrs['op-dead-letter-source'] = nil
          attrs['op-dead-letter-reason'] = nil
          attrs['op-delivery-attempts'] = nil
          attrs['op-original-id'] = nil
          if next(attrs) ~= nil then
            out[#out + 1] = 'a'
            out[#out + 1] = cjson.encode(attrs)
          end
        else
          out[#out + 1] = name
          out[#out + 1] = value
        end
      end
      redis.call('XADD', KEYS[4], '*', unpack(out))
      backlog_add(KEYS[5], -1, -entry_bytes(fields))
      backlog_add(KEYS[6], 1, entry_bytes(out))
      redis.call('XACK', KEYS[1], ARGV[1], id)
      redis.call('XDEL', KEYS[1], id)
      moved = moved + 1
    end
  end
end
if moved > 0 then redis.call('PUBLISH', ARGV[2], moved) end
return moved
