-- GCRA (generic cell rate algorithm) rate limit for one client.
-- Allows `limit` requests per `period_ms`, smoothly (no burst at window edges).
-- KEYS[1]  the client's key (its theoretical arrival time, ms)
-- ARGV[1]  limit     (requests per period)
-- ARGV[2]  period_ms
-- Returns  {allowed (0/1), remaining, retry_after_ms, reset_ms}
--   reset_ms: time until the client's full quota is back.
-- luacheck: globals KEYS ARGV redis
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local interval = period / limit

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end

local new_tat = tat + interval
local allow_at = new_tat - period
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end

-- At least 1 ms: with a huge limit the interval vanishes next to `now` in a double.
local ttl = math.max(1, math.ceil(new_tat - now))
-- %.4f: tostring() keeps only 14 significant digits, which would drop sub-ms intervals.
redis.call('SET', KEYS[1], string.format('%.4f', new_tat), 'PX', ttl)
local remaining = math.floor((now - allow_at) / interval)
return {1, remaining, 0, ttl}
