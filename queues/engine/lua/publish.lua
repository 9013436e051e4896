-- Publish a batch of validated messages to one queue or topic, atomically.
--
-- KEYS[1]                usage counters hash of the tenant
-- KEYS[2]                the tenant's publish counter for this second
-- KEYS[2j+1], KEYS[2j+2] stream and delay set of the j-th partition used (j = 1..np)
-- KEYS[2+2np+d]          d-th dedup key (d = 1..nd)
-- ARGV[1] now (ms)   ARGV[2] np   ARGV[3] n messages   ARGV[4] dedup window (s)
-- ARGV[5] this hour's usage field of published messages   ARGV[6] channel to notify waiting pulls
-- ARGV[7] 'all' to wake every waiter (a topic: each subscription wants the message), else ''
-- ARGV[8] messages per second the tenant may publish (0: no limit)
-- ARGV[9] messages per month (0: no limit)   ARGV[10] this month's usage field
-- ARGV[11] this hour's usage field of published bytes
-- then 9 per message: slot j, dedup index d (0: none), due (ms; 0: now), id, body,
--   encoding, attributes JSON ('' none), key ('' none), partition number
-- Returns per message {duplicate 0|1, "id\npartition\noffset"} (offset '' while delayed),
-- or {-1, 'rate'} / {-1, 'month'} when the batch would pass a limit, or {-1, 'gone'} when a
-- partition's stream does not exist (the queue or topic was deleted): then nothing is stored.
-- A dedup key remembers the first message for the window; a repeat stores nothing.
local now = tonumber(ARGV[1])
local np = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local window = tonumber(ARGV[4])
local rate_limit, month_limit = tonumber(ARGV[8]), tonumber(ARGV[9])
for j = 1, np do
  if redis.call('EXISTS', KEYS[2 * j + 1]) == 0 then return {-1, 'gone'} end
end
if rate_limit > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') + n > rate_limit then
  return {-1, 'rate'}
end
if month_limit > 0 and tonumber(redis.call('HGET', KEYS[1], ARGV[10]) or '0') + n > month_limit then
  return {-1, 'month'}
end
local out = {}
local ready, stored, bytes = 0, 0, 0
for m = 0, n - 1 do
  local b = 12 + m * 9
  local slot = tonumber(ARGV[b])
  local d = tonumber(ARGV[b + 1])
  local due = tonumber(ARGV[b + 2])
  local dedup_key = nil
  local previous = false
  if d > 0 then
    dedup_key = KEYS[2 + 2 * np + d]
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
      redis.call('ZADD', KEYS[2 * slot + 2], due, cmsgpack.pack(fields))
    else
      offset = redis.call('XADD', KEYS[2 * slot + 1], '*', unpack(fields))
      ready = ready + 1
    end
    local record = ARGV[b + 3] .. '\n' .. ARGV[b + 8] .. '\n' .. offset
    if dedup_key then redis.call('SET', dedup_key, record, 'EX', window) end
    out[#out + 1] = {0, record}
    stored = stored + 1
    bytes = bytes + #ARGV[b + 4] + #ARGV[b + 6]
  end
end
if stored > 0 then
  redis.call('HINCRBY', KEYS[1], ARGV[5], stored)
  redis.call('HINCRBY', KEYS[1], ARGV[11], bytes)
  redis.call('HINCRBY', KEYS[1], ARGV[10], stored)
  if rate_limit > 0 then
    redis.call('INCRBY', KEYS[2], stored)
    redis.call('EXPIRE', KEYS[2], 2)
  end
end
if ready > 0 then
  if ARGV[7] == 'all' then redis.call('PUBLISH', ARGV[6], 'all') else redis.call('PUBLISH', ARGV[6], ready) end
end
return out
