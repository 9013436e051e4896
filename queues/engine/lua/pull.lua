-- Lease up to `count` messages to a caller of a queue or a subscription (count 0: only do the
-- housekeeping: due delays into the stream, expired leases to backoff or dead letters).
--
-- KEYS[4p-3..4p]  stream, delay set, lease set, retry set of partition p (p = 1..P)
-- KEYS[4P+1]      usage counters hash      KEYS[4P+2]  the tenant's rate window of this second
-- KEYS[4P+3]      the queue's backlog hash (a subscription: its topic's, left alone here)
-- KEYS[4P+4], KEYS[4P+5]  dead-letter stream and its queue's backlog hash (when configured)
-- ARGV[1] now (ms)  ARGV[2] count  ARGV[3] visibility (ms)  ARGV[4] consumer group
-- ARGV[5] max delivery attempts (0: unlimited)  ARGV[6], ARGV[7] backoff min, max (ms)
-- ARGV[8] P  ARGV[9] first partition to look at (0-based, rotates fairness)
-- ARGV[10] attribute filter as JSON ('' none)  ARGV[11] dead-letter source label
-- ARGV[12] '1' for a queue (entries are deleted once settled), '2' for a fair queue
-- ARGV[13] this hour's usage field of delivered messages (the tenant's)
-- ARGV[14] dead-letter queue's channel ('' none)   ARGV[15] consumer name in the group
-- ARGV[16] this hour's field of delivered bytes   ARGV[17] of requests ('' when the call is
-- not a request: housekeeping, or the long poll's later pulls)   ARGV[18] of dead letters
-- ARGV[19] usage scope of the API key ('' none)   ARGV[20] usage scope of the resource
-- ARGV[21..] the limit checks (see read_checks in _lib.lua): the consume rates ('m') cap how
-- many messages are leased, the request rate ('r') counts this call. A fair queue then has
-- the noisy-group thresholds: percent of the in-flight total, least in-flight count; and the
-- least and most candidates a pull reads (see "Fair queues" below).
-- Returns {next_due_ms or -1, {partition, entry id, delivery attempt, fields}..., what each
-- limit check has left}; {-2, {}} when the consumer is gone (a group or the configured
-- dead-letter stream is missing), or {-3, i} when the i-th limit check is exhausted (no
-- message left this second, or no request): then nothing was changed or counted.
-- An expired lease whose message was delivered max-attempts times goes to the dead-letter
-- stream here, in the same step that finds it expired: never delivered once more.
local now = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local vis = tonumber(ARGV[3])
local group = ARGV[4]
local max_attempts = tonumber(ARGV[5])
local bmin, bmax = tonumber(ARGV[6]), tonumber(ARGV[7])
local P = tonumber(ARGV[8])
local first = tonumber(ARGV[9])
local filter = nil
if ARGV[10] ~= '' then filter = cjson.decode(ARGV[10]) end
local source = ARGV[11]
local is_queue = ARGV[12] == '1' or ARGV[12] == '2'
local fair = ARGV[12] == '2'
local consumer = ARGV[15]
local usage, rate, backlog = KEYS[4 * P + 1], KEYS[4 * P + 2], KEYS[4 * P + 3]
local dlq, dlq_backlog = KEYS[4 * P + 4], KEYS[4 * P + 5]
local key_scope, resource_scope = ARGV[19], ARGV[20]
if not consumer_alive(1, 4, P, group, dlq) then return {-2, {}} end
local checks, after = read_checks(21, usage, rate)
for i, c in ipairs(checks) do
  if (c[4] == 'r' and c[5] + 1 > c[3]) or (c[4] == 'm' and want > 0 and c[5] >= c[3]) then
    return {-3, i}
  end
end
local room = message_room(checks)
if room >= 0 and room < want then want = room end
local out_bytes = 0
local out = {}
local got, dead = 0, 0
local housekeeping = 200

-- Fair queues. A group (a message's key) is noisy while it holds more than `fair_pct` % of
-- the queue's leases and at least `fair_min` of them (SQS's fair-queue thresholds). The pull
-- reads a window of candidates, the backoffs that are over first and then new entries, and
-- leases the quiet groups' first, in order, then fills what room is left from the noisy
-- ones: the order changes, nothing starves and no pull is left empty when a message waits.
-- A new entry read and not chosen is handed back as the filter's read-ahead is: its delivery
-- count reset, in the retry set due now, so the next pull weighs it again as attempt 1.
-- A chosen candidate is leased with the visibility, attempts and dead letters of any other.
local fair_pct, fair_min, window_min, window_max = 0, 0, 0, 0
if fair then
  fair_pct, fair_min = tonumber(ARGV[after]), tonumber(ARGV[after + 1])
  window_min, window_max = tonumber(ARGV[after + 2]), tonumber(ARGV[after + 3])
end

local function fair_fill(p, stream, lease, retry, got, out_bytes)
  local map, counts = lease .. ':fair', lease .. ':fairn'
  if redis.call('ZCARD', lease) == 0 then
    -- nothing leased: the counts are 0, whatever a switch of fair mode left in them
    redis.call('DEL', map, counts)
  end
  local window = math.min(math.max(4 * (want - got), window_min), window_max)
  local cands = {}  -- {id, fields, delivery count so far, from the retry set}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', retry, '-inf', now, 'LIMIT', 0, window)) do
    local count = pending_count(stream, group, id)
    local found = redis.call('XRANGE', stream, id, id)
    if count == nil then
      redis.call('ZREM', retry, id)
    elseif #found == 0 then
      redis.call('ZREM', retry, id)
      redis.call('XACK', stream, group, id)  -- the entry was trimmed by retention
    else
      cands[#cands + 1] = {id, found[1][2], count, true}
    end
  end
  if #cands < window then
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', window - #cands,
      'STREAMS', stream, '>')
    if read and read[1] then
      for _, entry in ipairs(read[1][2]) do cands[#cands + 1] = {entry[1], entry[2], 0, false} end
    end
  end
  local total = redis.call('HLEN', map)
  local held = {}
  local function noisy(g)
    if held[g] == nil then held[g] = tonumber(redis.call('HGET', counts, g) or '0') end
    return held[g] >= fair_min and held[g] * 100 > total * fair_pct
  end
  local chosen = {}
  local function lease_it(i)
    local c = cands[i]
    local id, fields, g = c[1], c[2], entry_group(c[2])
    if c[4] then
      redis.call('ZREM', retry, id)
      redis.call('XCLAIM', stream, group, consumer, 0, id)  -- counts the delivery
    end
    redis.call('ZADD', lease, now + vis, id)
    noisy(g)  -- held[g] known before the lease is counted
    fair_take(lease, id, g)
    held[g] = held[g] + 1
    total = total + 1
    out[#out + 1] = {p, id, c[3] + 1, fields}
    out_bytes = out_bytes + entry_bytes(fields)
    got = got + 1
    chosen[i] = true
  end
  for i = 1, #cands do
    if got >= want then break end
    if not noisy(entry_group(cands[i][2])) then lease_it(i) end
  end
  for i = 1, #cands do
    if got >= want then break end
    if not chosen[i] then lease_it(i) end
  end
  for i = 1, #cands do
    if not chosen[i] and not cands[i][4] then
      redis.call('XCLAIM', stream, group, consumer, 0, cands[i][1], 'RETRYCOUNT', 0, 'JUSTID')
      redis.call('ZADD', retry, now, cands[i][1])
    end
  end
  return got, out_bytes
end

for step = 0, P - 1 do
  local p = (first + step) % P
  local stream, delay, lease, retry = KEYS[4 * p + 1], KEYS[4 * p + 2], KEYS[4 * p + 3], KEYS[4 * p + 4]

  -- 1. Delayed messages that are due join the stream.
  local due = redis.call('ZRANGEBYSCORE', delay, '-inf', now, 'LIMIT', 0, 500)
  for _, packed in ipairs(due) do
    redis.call('XADD', stream, '*', unpack(cmsgpack.unpack(packed)))
    redis.call('ZREM', delay, packed)
  end

  -- 2. Expired leases: dead-letter, wait out the backoff, or deliver again.
  local again = {}
  local expired = redis.call('ZRANGEBYSCORE', lease, '-inf', now, 'WITHSCORES', 'LIMIT', 0, want + housekeeping)
  for i = 1, #expired, 2 do
    local id = expired[i]
    local deadline = tonumber(expired[i + 1])
    local count = pending_count(stream, group, id)
    if count == nil then
      redis.call('ZREM', lease, id)
      if fair then fair_release(lease, id) end
    elseif max_attempts > 0 and count >= max_attempts and dlq then
      dead = dead + dead_letter(stream, group, lease, retry, id, count, dlq, source,
        'max_delivery_attempts', is_queue, backlog, dlq_backlog)
      if fair then fair_release(lease, id) end
    else
      local wait = backoff_ms(count, bmin, bmax)
      if deadline + wait > now or #again + got >= want then
        redis.call('ZREM', lease, id)
        redis.call('ZADD', retry, deadline + wait, id)
        if fair then fair_release(lease, id) end
      else
        again[#again + 1] = {id, count, lease}
      end
    end
  end

  -- 3. Messages whose backoff is over (a fair queue weighs them with the new ones, in 5).
  if #again + got < want and not fair then
    local ready = redis.call('ZRANGEBYSCORE', retry, '-inf', now, 'LIMIT', 0, want - got - #again)
    for _, id in ipairs(ready) do
      local count = pending_count(stream, group, id)
      if count == nil then
        redis.call('ZREM', retry, id)
      else
        again[#again + 1] = {id, count, retry}
      end
    end
  end

  -- 4. Deliver them again: XCLAIM counts the new delivery.
  for _, item in ipairs(again) do
    local id, count, from = item[1], item[2], item[3]
    redis.call('ZREM', from, id)
    local claimed = redis.call('XCLAIM', stream, group, consumer, 0, id)
    if #claimed == 0 or not claimed[1] or claimed[1] == false or not claimed[1][2] then
      redis.call('XACK', stream, group, id)  -- the entry was trimmed by retention
      if fair then fair_release(lease, id) end
    else
      redis.call('ZADD', lease, now + vis, id)
      if fair then fair_take(lease, id, entry_group(claimed[1][2])) end
      out[#out + 1] = {p, id, count + 1, claimed[1][2]}
      out_bytes = out_bytes + entry_bytes(claimed[1][2])
      got = got + 1
    end
  end

  -- 5. New messages.
  if fair and got < want then
    got, out_bytes = fair_fill(p, stream, lease, retry, got, out_bytes)
  end
  local rounds = 0
  while got < want and rounds < 10 and not fair do
    rounds = rounds + 1
    local need = want - got
    if filter then need = math.max(need, 50) end
    local read = redis.call('XREADGROUP', 'GROUP', group, consumer, 'COUNT', need, 'STREAMS', stream, '>')
    if not read or not read[1] then break end
    local entries = read[1][2]
    if #entries == 0 then break end
    for _, entry in ipairs(entries) do
      local id, fields = entry[1], entry[2]
      if filter and not attrs_match(fields, filter) then
        -- Not for this subscription, read ahead or not: settled at once. (Checked first: a
        -- rejected entry handed back below would be delivered from the retry set, which
        -- knows nothing of filters.)
        redis.call('XACK', stream, group, id)
      elseif got >= want then
        -- Read ahead while skipping filtered entries: hand the matching rest back
        -- undelivered, with their delivery count reset so their first real delivery is
        -- attempt 1.
        redis.call('XCLAIM', stream, group, consumer, 0, id, 'RETRYCOUNT', 0, 'JUSTID')
        redis.call('ZADD', retry, now, id)
      else
        redis.call('ZADD', lease, now + vis, id)
        out[#out + 1] = {p, id, 1, fields}
        out_bytes = out_bytes + entry_bytes(fields)
        got = got + 1
      end
    end
    if #entries < need then break end
  end
  if got >= want and want > 0 then break end
end

local left = charge(checks, rate, got)
if ARGV[17] ~= '' then meter(usage, ARGV[17], 1, key_scope, resource_scope) end
if got > 0 then
  meter(usage, ARGV[13], got, key_scope, resource_scope)
  meter(usage, ARGV[16], out_bytes, key_scope, resource_scope)
end
if dead > 0 then meter(usage, ARGV[18], dead, key_scope, resource_scope) end
if dead > 0 and ARGV[14] ~= '' then redis.call('PUBLISH', ARGV[14], dead) end

-- When nothing was delivered, tell a long poll when the next message becomes due.
local next_due = -1
if got == 0 then
  for p = 0, P - 1 do
    for _, set in ipairs({KEYS[4 * p + 2], KEYS[4 * p + 3], KEYS[4 * p + 4]}) do
      local head = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
      if #head > 0 then
        local at = tonumber(head[2])
        if set == KEYS[4 * p + 3] then
          at = at + backoff_ms(1, bmin, bmax)
        end
        if next_due < 0 or at < next_due then next_due = at end
      end
    end
  end
end
return {next_due, out, left}
