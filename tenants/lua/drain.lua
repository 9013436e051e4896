-- Take a hash and delete it in one step, so nothing written in between is lost.
-- KEYS[1] the hash (the API keys' last-used times, openplatform.redis_keys.LAST_USED).
-- No ARGV. Returns the hash's fields and values, flat: field, value, field, value, ...
local values = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
return values
