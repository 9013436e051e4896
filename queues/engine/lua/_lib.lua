-- Shared helpers, prepended to every script of this folder when it is loaded.
--
-- A stream entry's fields: i = message id, b = body bytes, e = encoding ("j" JSON text,
-- "b" raw bytes), a = attributes as a JSON object (absent when empty), k = key (absent when
-- none), t = publish time (ms). A lease is a member of a "lease" sorted set scored by its
-- deadline (ms); a message waiting for its retry backoff is in a "retry" sorted set scored
-- by when it may be delivered again. Every pending entry is in exactly one of the two.
--
-- A resource is alive in Redis while its structures exist: a queue's stream with its group, a
-- topic's partition streams, a subscription's group on each of them. Deleting a resource
-- removes them in one step (drop.lua), so a script that finds them missing writes nothing and
-- says so ("gone"): a process still holding a cached copy of a deleted resource can never
-- recreate its keys, nor store a message nobody will read.

-- True when consumer group `group` exists on `stream` (and so does the stream).
local function group_exists(stream, group)
  local reply = redis.pcall('XPENDING', stream, group)
  return not (type(reply) == 'table' and reply.err)
end

-- True when every partition's stream (KEYS[first + step * p], p = 0..P-1) has `group`, and
-- the dead-letter stream `dlq` (nil: none configured) exists.
local function consumer_alive(first, step, P, group, dlq)
  for p = 0, P - 1 do
    if not group_exists(KEYS[first + step * p], group) then return false end
  end
  return not dlq or redis.call('EXISTS', dlq) == 1
end

local function backoff_ms(count, min_ms, max_ms)
  if min_ms <= 0 then return 0 end
  local wait = min_ms * (2 ^ (count - 1))
  if wait > max_ms then wait = max_ms end
  return wait
end

-- The delivery count of one pending entry, or nil when the entry is not pending.
local function pending_count(stream, group, id)
  local p = redis.call('XPENDING', stream, group, id, id, 1)
  if #p == 0 then return nil end
  return tonumber(p[1][4])
end

-- Move entry `id` to the dead-letter stream with the op-* attributes, and remove it from the
-- source (ack; and delete the entry itself when the source is a queue). Returns 1 when a
-- message was moved, 0 when the entry no longer existed (trimmed by retention).
local function dead_letter(stream, group, lease, retry, id, count, dlq, source, reason, is_queue)
  local found = redis.call('XRANGE', stream, id, id)
  redis.call('XACK', stream, group, id)
  redis.call('ZREM', lease, id)
  redis.call('ZREM', retry, id)
  if is_queue then redis.call('XDEL', stream, id) end
  if #found == 0 then return 0 end
  local fields = found[1][2]
  local out = {}
  local attrs = {}
  local msgid = ''
  for i = 1, #fields, 2 do
    local name = fields[i]
    if name == 'a' then
      attrs = cjson.decode(fields[i + 1])
    else
      out[#out + 1] = name
      out[#out + 1] = fields[i + 1]
      if name == 'i' then msgid = fields[i + 1] end
    end
  end
  attrs['op-dead-letter-source'] = source
  attrs['op-dead-letter-reason'] = reason
  attrs['op-delivery-attempts'] = tostring(count)
  attrs['op-original-id'] = msgid
  out[#out + 1] = 'a'
  out[#out + 1] = cjson.encode(attrs)
  redis.call('XADD', dlq, '*', unpack(out))
  return 1
end

local function attrs_match(fields, filter)
  local attrs = {}
  for i = 1, #fields, 2 do
    if fields[i] == 'a' then attrs = cjson.decode(fields[i + 1]) end
  end
  for name, value in pairs(filter) do
    if attrs[name] ~= value then return false end
  end
  return true
end
