-- hold.lua: hold explicit seats for a buyer, all or nothing.
--
-- Checks, in order: the buyer's request budget (an attempt spends it whatever its
-- outcome), every seat is in the partition's catalog, every seat is
-- free (an expired hold counts as free), and the buyer's per-event limit
-- (live held + pending + sold seats, plus this request) is not exceeded.
-- Then writes the hold with its expiry from server time and appends a
-- 'held' delta to the partition stream.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: hold_id, buyer, ttl_ms, max_lifetime_ms, buyer_limit, budget_interval_ms (0 = no
--       budget), budget_burst, seat_1 .. seat_n
-- Returns:
--   {'ok', hold_id, buyer, created_ms, expires_ms, max_expires_ms, version, seat1, cat1, ...}
--   {'unknown', seat...}      seats not in this partition's catalog
--   {'taken', seat...}        seats held by someone else, pending or sold
--   {'limit', used, limit}    the buyer would exceed the per-event limit
--   {'duplicate'}             hold_id already exists (caller retries with a new id)
--   {'not_loaded'}            the partition has no catalog (not loaded / lost)
--   {'budget', retry_ms}      the buyer spent their attempts; the next is allowed in retry_ms
--   {'shut', state}           the sale is shut (gate key: paused, closed, cancelled, draft)
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local hold_id, buyer = ARGV[1], ARGV[2]
local ttl, max_life, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local interval, burst = tonumber(ARGV[6]), tonumber(ARGV[7])
local seats = {}
for i = 8, #ARGV do seats[#seats + 1] = ARGV[i] end

local now = TB.now_ms()

local wait = TB.spend_budget(buyer, now, interval, burst)
if wait then return {'budget', wait} end

local gate = redis.call('GET', TB.K.gate)
if gate then return {'shut', gate} end

if redis.call('EXISTS', TB.K.seats) == 0 then return {'not_loaded'} end

local cats = TB.hmget(TB.K.seats, seats)
local unknown = {'unknown'}
for i, seat in ipairs(seats) do
  if not cats[i] then unknown[#unknown + 1] = seat end
end
if #unknown > 1 then return unknown end

local prev = TB.hmget(TB.K.state, seats)
local taken = {'taken'}
for i, seat in ipairs(seats) do
  if TB.decode(prev[i], now) ~= 'free' then taken[#taken + 1] = seat end
end
if #taken > 1 then return taken end

local used = TB.buyer_usage(buyer, now, true)
if used + #seats > limit then return {'limit', used, limit} end

if redis.call('HEXISTS', TB.K.holds, hold_id) == 1 then return {'duplicate'} end

local version, rec = TB.take(hold_id, buyer, seats, cats, prev, now, ttl, max_life)
return TB.hold_reply(hold_id, rec, version)
