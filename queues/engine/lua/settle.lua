-- Settle leases by ack id: ack, nack, or change their deadline.
--
-- KEYS[3p-2..3p]  stream, lease set, retry set of partition p (p = 1..P)
-- KEYS[3P+1]      usage counters hash      KEYS[3P+2]  the tenant's rate window of this second
-- KEYS[3P+3]      the queue's backlog hash (a subscription: its topic's, left alone here)
-- KEYS[3P+4], KEYS[3P+5]  dead-letter stream and its queue's backlog hash (when configured)
-- ARGV[1] mode: 'ack' | 'nack' | 'deadline'   ARGV[2] now (ms)   ARGV[3] consumer group
-- ARGV[4] P   ARGV[5] '1' for a queue, '2' for a fair queue   ARGV[6] ms: nack delay (-1: the backoff policy) or
-- the new lease length for 'deadline' (0: deliverable now)   ARGV[7] max delivery attempts
-- ARGV[8], ARGV[9] backoff min, max (ms)   ARGV[10] dead-letter source label
-- ARGV[11] this hour's usage field of acked messages   ARGV[12] channel to notify   ARGV[13] dead-letter channel
-- ARGV[14] this hour's usage field of requests ('' when the call is not a request)
-- ARGV[15] of dead letters
-- ARGV[16] usage scope of the API key ('' none)   ARGV[17] usage scope of the resource
-- ARGV[18..] the limit checks (see read_checks in _lib.lua: the request rate), then triples
-- (partition 0-based, entry id, delivery attempt).
-- Returns {settled, {stale positions (0-based)}, what each limit check has left}, {-1, {}}
-- when the consumer is gone (a group or the configured dead-letter stream is missing), or
-- {-3, i} when the i-th limit check is exhausted: then nothing was changed or counted. An
-- ack id is stale when its lease has
-- expired or the message was delivered again since: it changes nothing. An ack id of a
-- message no longer pending (already acked, purged, dead-lettered) changes nothing either and
-- is neither settled nor stale.
local mode = ARGV[1]
local now = tonumber(ARGV[2])
local group = ARGV[3]
local P = tonumber(ARGV[4])
local is_queue = ARGV[5] == '1' or ARGV[5] == '2'
local fair = ARGV[5] == '2'  -- a lease that ends leaves its group's in-flight count
local ms = tonumber(ARGV[6])
local max_attempts = tonumber(ARGV[7])
local bmin, bmax = tonumber(ARGV[8]), tonumber(ARGV[9])
local usage, rate, backlog = KEYS[3 * P + 1], KEYS[3 * P + 2], KEYS[3 * P + 3]
local dlq, dlq_backlog = KEYS[3 * P + 4], KEYS[3 * P + 5]
local key_scope, resource_scope = ARGV[16], ARGV[17]
if not consumer_alive(1, 3, P, group, dlq) then return {-1, {}} end
local checks, first = read_checks(18, usage, rate)
local over = first_exhausted(checks, 0)
if over > 0 then return {-3, over} end
local settled, notify, dead = 0, 0, 0
local stale = {}
local position = 0
for i = first, #ARGV, 3 do
  local p = tonumber(ARGV[i])
  local id = ARGV[i + 1]
  local attempt = tonumber(ARGV[i + 2])
  local stream, lease, retry = KEYS[3 * p + 1], KEYS[3 * p + 2], KEYS[3 * p + 3]
  local deadline = redis.call('ZSCORE', lease, id)
  local count = pending_count(stream, group, id)
  if count == nil then
    redis.call('ZREM', lease, id)  -- not pending any more: nothing to settle
    if fair then fair_release(lease, id) end
  elseif not deadline or tonumber(deadline) <= now or count ~= attempt then
    stale[#stale + 1] = position
  elseif mode == 'ack' then
    redis.call('XACK', stream, group, id)
    redis.call('ZREM', lease, id)
    if fair then fair_release(lease, id) end
    if is_queue then
      local found = redis.call('XRANGE', stream, id, id)
      if #found > 0 then backlog_add(backlog, -1, -entry_bytes(found[1][2])) end
      redis.call('XDEL', stream, id)
    end
    settled = settled + 1
  elseif mode == 'deadline' and ms > 0 then
    redis.call('ZADD', lease, now + ms, id)
    settled = settled + 1
  elseif max_attempts > 0 and count >= max_attempts and dlq then
    dead = dead + dead_letter(stream, group, lease, retry, id, count, dlq, ARGV[10],
      'max_delivery_attempts', is_queue, backlog, dlq_backlog)
    if fair then fair_release(lease, id) end
    settled = settled + 1
  else
    local wait = ms
    if mode == 'deadline' then wait = 0 elseif wait < 0 then wait = backoff_ms(count, bmin, bmax) end
    redis.call('ZREM', lease, id)
    redis.call('ZADD', retry, now + wait, id)
    if fair then fair_release(lease, id) end
    if wait == 0 then notify = notify + 1 end
    settled = settled + 1
  end
  position = position + 1
end
local left = charge(checks, rate, 0)
if ARGV[14] ~= '' then meter(usage, ARGV[14], 1, key_scope, resource_scope) end
if mode == 'ack' then meter(usage, ARGV[11], settled, key_scope, resource_scope) end
if dead > 0 then meter(usage, ARGV[15], dead, key_scope, resource_scope) end
if notify > 0 then
  if is_queue then redis.call('PUBLISH', ARGV[12], notify) else redis.call('PUBLISH', ARGV[12], 'all') end
end
if dead > 0 and ARGV[13] ~= '' then redis.call('PUBLISH', ARGV[13], dead) end
return {settled, stale, left}
