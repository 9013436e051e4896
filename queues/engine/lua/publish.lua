-- Publish a batch of validated messages to one queue or topic, atomically, within the limits.
--
-- KEYS[1]                usage counters hash of the tenant
-- KEYS[2]                the tenant's rate window of this second (kernel.redis_keys.rate_window_key)
-- KEYS[3]                the queue's or topic's backlog hash (n messages, b bytes)
-- KEYS[2j+2], KEYS[2j+3] stream and delay set of the j-th partition used (j = 1..np)
-- KEYS[3+2np+d]          d-th dedup key (d = 1..nd)
-- ARGV[1] now (ms)   ARGV[2] np   ARGV[3] n messages   ARGV[4] dedup window (s)
-- ARGV[5] this hour's usage field of published messages (the tenant's)   ARGV[6] channel to
-- notify waiting pulls   ARGV[7] 'all' to wake every waiter (a topic: each subscription wants
-- the message), else ''   ARGV[8] this hour's field of published bytes   ARGV[9] this hour's
-- field of requests ('' when the call is not a request)   ARGV[10] this month's usage field
-- ARGV[11] usage scope of the API key ('' none)   ARGV[12] usage scope of the resource
-- ARGV[13] most messages the backlog may hold (-1: no limit)   ARGV[14] most bytes (-1: none)
-- ARGV[15..] the limit checks (see read_checks in _lib.lua), then 9 per message: slot j,
--   dedup index d (0: none), due (ms; 0: now), id, body, encoding, attributes JSON ('' none),
--   key ('' none), partition number
-- Returns {1, per message {duplicate 0|1, "id\npartition\noffset"} (offset '' while delayed),
-- what each limit check has left}; or, having stored and counted nothing: {-1, 'limit', i}
-- when the batch would pass the i-th check, {-1, 'backlog', 'messages' | 'bytes'} when it
-- would pass the backlog's limit, {-1, 'gone'} when a partition's stream does not exist (the
-- queue or topic was deleted). A dedup key remembers the first message for the window; a
-- repeat stores nothing and counts as no message (the request counts).
local now = tonumber(ARGV[1])
local np = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local usage, rate, backlog = KEYS[1], KEYS[2], KEYS[3]
local key_scope, resource_scope = ARGV[11], ARGV[12]
for j = 1, np do
  if redis.call('EXISTS', KEYS[2 * j + 2]) == 0 then return {-1, 'gone'} end
end
local checks, first = read_checks(15, usage, rate)
local over = first_exhausted(checks, n)
if over > 0 then return {-1, 'limit', over} end
local max_messages, max_bytes = tonumber(ARGV[13]), tonumber(ARGV[14])
if max_messages >= 0 or max_bytes >= 0 then
  local batch_bytes = 0
  for m = 0, n - 1 do
    batch_bytes = batch_bytes + #ARGV[first + m * 9 + 4] + #ARGV[first + m * 9 + 6]
  end
  local held = redis.call('HMGET', backlog, 'n', 'b')
  if max_messages >= 0 and tonumber(held[1] or '0') + n > max_messages then
    return {-1, 'backlog', 'messages'}
  end
  if max_bytes >= 0 and tonumber(held[2] or '0') + batch_bytes > max_bytes then
    return {-1, 'backlog', 'bytes'}
  end
end
local out = {}
local ready, stored, bytes = 0, 0, 0
for m = 0, n - 1 do
  local b = first + m * 9
  local slot = tonumber(ARGV[b])
  local d = tonumber(ARGV[b + 1])
  local due = tonumber(ARGV[b + 2])
  local dedup_key = nil
  local previous = false
  if d > 0 then
    dedup_key = KEYS[3 + 2 * np + d]
    previous = redis.call('GET', dedup_key)
  end
  if previous then
    out[#out + 1] = {1, previous}
  else
    local fields = {'i', ARGV[b + 3], 'b', ARGV[b + 4], 'e', ARGV[b + 5]}
    if ARGV[b + 6] ~= '' then
      fields[#fields + 1] = 'a'
      fields[#fields + 1] = ARGV[b + 6]
    end
    if ARGV[b + 7] ~= '' then
      fields[#fields + 1] = 'k'
      fields[#fields + 1] = ARGV[b + 7]
    end
    fields[#fields + 1] = 't'
    fields[#fields + 1] = ARGV[1]
    local offset = ''
    if due > now then
      redis.call('ZADD', KEYS[2 * slot + 3], due, cmsgpack.pack(fields))
    else
      offset = redis.call('XADD', KEYS[2 * slot + 2], '*', unpack(fields))
      ready = ready + 1
    end
    local record = ARGV[b + 3] .. '\n' .. ARGV[b + 8] .. '\n' .. offset
    if dedup_key then redis.call('SET', dedup_key, record, 'EX', window) end
    out[#out + 1] = {0, record}
    stored = stored + 1
    bytes = bytes + #ARGV[b + 4] + #ARGV[b + 6]
  end
end
local left = charge(checks, rate, stored)
if ARGV[9] ~= '' then meter(usage, ARGV[9], 1, key_scope, resource_scope) end
if stored > 0 then
  meter(usage, ARGV[5], stored, key_scope, resource_scope)
  meter(usage, ARGV[8], bytes, key_scope, resource_scope)
  meter(usage, ARGV[10], stored, key_scope, '')
  backlog_add(backlog, stored, bytes)
end
if ready > 0 then
  if ARGV[7] == 'all' then redis.call('PUBLISH', ARGV[6], 'all') else redis.call('PUBLISH', ARGV[6], ready) end
end
return {1, out, left}
