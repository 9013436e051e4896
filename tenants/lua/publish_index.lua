-- Publish a freshly built index. KEYS[1] the live index (a set of prefixes), KEYS[2] the set
-- just built from PostgreSQL (every prefix read, plus the completeness marker). ARGV[1] how
-- many members KEYS[2] must hold; ARGV[2] the live index's time to live in seconds. The build
-- is merged into the live set (never replacing it, so a prefix pushed by a key created during
-- the build stays), and only when it is whole: a build that lost members (an OOM refusal
-- mid-way) is dropped, and the old state (without the marker: PostgreSQL is asked) stands.
-- Returns 1 when published, 0 when dropped.
if redis.call('SCARD', KEYS[2]) ~= tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[2])
  return 0
end
redis.call('SUNIONSTORE', KEYS[1], KEYS[1], KEYS[2])
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('DEL', KEYS[2])
return 1
