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

-- The bytes a message counts for, in the backlog and in metering: its body and attributes,
-- as the publish script measures them (the other fields are the engine's own).
local function entry_bytes(fields)
  local n = 0
  for i = 1, #fields, 2 do
    if fields[i] == 'b' or fields[i] == 'a' then n = n + #fields[i + 1] end
  end
  return n
end

-- Add to a queue's or topic's backlog hash (n messages, b bytes; nil or '': none). Never below
-- 0: messages stored before the counters existed are not in them.
local function backlog_add(key, messages, bytes)
  if not key or key == '' or (messages == 0 and bytes == 0) then return end
  if redis.call('HINCRBY', key, 'n', messages) < 0 then redis.call('HSET', key, 'n', 0) end
  if redis.call('HINCRBY', key, 'b', bytes) < 0 then redis.call('HSET', key, 'b', 0) end
end

-- Add n to the usage hash's `field` (the tenant's total) and to the same field of a key
-- and of a resource: `field .. scope` (kernel.redis_keys.usage_scope; '': not counted).
local function meter(usage, field, n, key_scope, resource_scope)
  if n == 0 then return end
  redis.call('HINCRBY', usage, field, n)
  if key_scope ~= '' then redis.call('HINCRBY', usage, field .. key_scope, n) end
  if resource_scope ~= '' then redis.call('HINCRBY', usage, field .. resource_scope, n) end
end

-- The limits a call meets, from ARGV[at]: their number k, then k times (where: 'w' the
-- second's rate window, 'u' the usage hash (a month's count); field; limit; unit: 'r' one
-- per request, 'm' one per message). Returns the checks {hash, field, limit, unit, used} and
-- the index of the ARGV after them.
local function read_checks(at, usage, window)
  local checks = {}
  local k = tonumber(ARGV[at])
  for i = 0, k - 1 do
    local b = at + 1 + 4 * i
    local hash = usage
    if ARGV[b] == 'w' then hash = window end
    checks[i + 1] = {hash, ARGV[b + 1], tonumber(ARGV[b + 2]), ARGV[b + 3],
      tonumber(redis.call('HGET', hash, ARGV[b + 1]) or '0')}
  end
  return checks, at + 1 + 4 * k
end

local function check_cost(check, messages)
  if check[4] == 'r' then return 1 end
  return messages
end

-- The position of the first check that this call with `messages` messages would pass; 0: none.
local function first_exhausted(checks, messages)
  for i, c in ipairs(checks) do
    if c[5] + check_cost(c, messages) > c[3] then return i end
  end
  return 0
end

-- How many messages every per-message check still allows; -1: no such check.
local function message_room(checks)
  local room = -1
  for _, c in ipairs(checks) do
    if c[4] == 'm' then
      local left = math.max(c[3] - c[5], 0)
      if room < 0 or left < room then room = left end
    end
  end
  return room
end

-- Count the call in the rate window's checks (a month's count is metering: the script counts
-- it, whether a limit applies or not). Returns what each check has left after the call.
local function charge(checks, window, messages)
  local left = {}
  local counted = false
  for i, c in ipairs(checks) do
    local n = check_cost(c, messages)
    if c[1] == window and n > 0 then
      redis.call('HINCRBY', window, c[2], n)
      counted = true
    end
    left[i] = math.max(c[3] - c[5] - n, 0)
  end
  if counted then redis.call('EXPIRE', window, 2) end
  return left
end

-- Move entry `id` to the dead-letter stream with the op-* attributes, and remove it from the
-- source (ack; and delete the entry itself when the source is a queue). The backlog hashes
-- follow: the source queue's (`src_backlog`, nil for a subscription: its topic keeps the
-- entry) loses the message, the dead-letter queue's (`dlq_backlog`) gains it. Returns 1 when a
-- message was moved, 0 when the entry no longer existed (trimmed by retention).
local function dead_letter(stream, group, lease, retry, id, count, dlq, source, reason, is_queue,
    src_backlog, dlq_backlog)
  local found = redis.call('XRANGE', stream, id, id)
  redis.call('XACK', stream, group, id)
  redis.call('ZREM', lease, id)
  redis.call('ZREM', retry, id)
  if is_queue then redis.call('XDEL', stream, id) end
  if #found == 0 then return 0 end
  local fields = found[1][2]
  if is_queue then backlog_add(src_backlog, -1, -entry_bytes(fields)) end
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
  backlog_add(dlq_backlog, 1, entry_bytes(out))
  return 1
end

-- Fair queues: per-group in-flight counts. Two hashes beside the lease set (same hash tag):
-- `<lease>:fair` maps each leased entry id to its group (the message's key, '' without one),
-- so a lease ending knows its group even when the entry is gone; its length is the queue's
-- in-flight total. `<lease>:fairn` maps a group to its number of leased entries. Only scripts
-- told that the queue is fair touch them (purge, delete and drop clear them whatever).
local function fair_take(lease, id, g)
  if redis.call('HSETNX', lease .. ':fair', id, g) == 1 then
    redis.call('HINCRBY', lease .. ':fairn', g, 1)
  end
end

local function fair_release(lease, id)
  local map = lease .. ':fair'
  local g = redis.call('HGET', map, id)
  if g then
    redis.call('HDEL', map, id)
    if redis.call('HINCRBY', lease .. ':fairn', g, -1) <= 0 then
      redis.call('HDEL', lease .. ':fairn', g)
    end
  end
end

-- A message's group in a fair queue: its key field, '' when it has none.
local function entry_group(fields)
  for i = 1, #fields, 2 do
    if fields[i] == 'k' then return fields[i + 1] end
  end
  return ''
end
