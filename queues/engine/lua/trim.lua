-- Drop the entries of streams older than a floor (retention), keeping their queue's or
-- topic's backlog hash exact: the bytes of what goes are read first.
--
-- KEYS[2s-1], KEYS[2s]  a stream and its backlog hash
-- ARGV[1] the floor (ms): entries with ids before "<floor>-0" go
-- ARGV[2] most entries removed per stream in this call (a bounded step; the caller comes back)
-- Returns the number of entries removed. A stream that does not exist is left alone (never
-- recreated, nor its backlog).
if tonumber(ARGV[1]) <= 0 then return 0 end
local floor = ARGV[1] .. '-0'
local budget = tonumber(ARGV[2])
local removed = 0
for s = 1, #KEYS, 2 do
  local stream, backlog = KEYS[s], KEYS[s + 1]
  if redis.call('EXISTS', stream) == 1 then
    local bytes, read, cursor, upto = 0, 0, '-', floor
    while true do
      local page = redis.call('XRANGE', stream, cursor, '(' .. floor, 'COUNT', math.min(1000, budget - read))
      for _, entry in ipairs(page) do bytes = bytes + entry_bytes(entry[2]) end
      read = read + #page
      if #page == 0 then break end
      cursor = '(' .. page[#page][1]
      if read >= budget then
        -- stop here: what follows the last entry read stays for the next call
        local after = redis.call('XRANGE', stream, cursor, '+', 'COUNT', 1)
        if #after > 0 then upto = after[1][1] end
        break
      end
    end
    if read > 0 then
      local n = redis.call('XTRIM', stream, 'MINID', upto)
      removed = removed + n
      backlog_add(backlog, -n, -bytes)
    end
  end
end
return removed
