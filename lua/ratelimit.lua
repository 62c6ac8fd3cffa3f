-- ratelimit.lua: GCRA (generic cell rate algorithm) budget of one client, leased in cells.
--
-- The client may make `limit` requests per `period_ms` on average and at most `burst` at
-- once. A caller asks for up to `want` cells at a time and spends them locally (an API
-- replica leasing part of the budget); cells leased and not spent are lost, so the limit
-- across every replica together is never looser than `limit` per period.
--
-- KEYS: the client's key (its theoretical arrival time, ms)
-- ARGV: limit (requests per period), period_ms, burst (cells available at once, <= limit),
--       want (cells asked for, >= 1)
-- Returns: {granted, remaining, retry_after_ms, reset_ms}
--   granted: cells leased now (0 = refused; then retry_after_ms says when one is back)
--   remaining: cells still available after this lease
--   reset_ms: time until the client's whole burst is available again
-- luacheck: globals KEYS ARGV redis
local limit, period = tonumber(ARGV[1]), tonumber(ARGV[2])
local burst, want = tonumber(ARGV[3]), tonumber(ARGV[4])
local interval = period / limit

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)

local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then
  tat = now
end

-- Cells free now: the largest n with tat + n * interval - burst * interval <= now.
local free = math.floor((now - tat) / interval + burst + 1e-9)
if free < 1 then
  return {0, 0, math.ceil(tat + interval - burst * interval - now), math.ceil(tat - now)}
end

local granted = math.min(want, free)
local new_tat = tat + granted * interval
-- At least 1 ms: with a huge limit the interval vanishes next to `now` in a double.
local ttl = math.max(1, math.ceil(new_tat - now))
-- %.4f: tostring() keeps only 14 significant digits, which would drop sub-ms intervals.
redis.call('SET', KEYS[1], string.format('%.4f', new_tat), 'PX', ttl)
return {granted, free - granted, 0, ttl}
