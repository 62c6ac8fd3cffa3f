-- best_available.lua: choose N adjacent seats in one row of a category and hold them.
--
-- Rows are tried in catalog order (best first, as given to load). Seats are
-- adjacent when their numbers are consecutive in the same row and category.
-- A choice that leaves no single-seat gap in its row is preferred; a choice
-- that leaves one is taken only when no row allows better. Placement is at the
-- start of a free run, so it always touches the row's edge or a taken seat.
-- Cost: expired holds are swept first (up to sweep_limit) so the per-row free
-- counters are exact; only rows with at least N free seats are read, so the
-- script reads O(candidate rows), not the whole event.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: hold_id, buyer, ttl_ms, max_lifetime_ms, buyer_limit, category, quantity, sweep_limit,
--       budget_interval_ms (0 = no budget), budget_burst (see hold.lua),
--       accessible ('1': only wheelchair spaces and companion seats), reserved_until_ms
--       (before it, a request that did not ask never gets those seats; 0 = not reserved),
--       gap_free_only ('1': answer 'none' rather than take a gap-leaving choice; a split
--       event asks every partition for a gap-free run before it settles for a gap)
-- Returns:
--   {'ok', hold_id, buyer, created_ms, expires_ms, max_expires_ms, version, seat1, cat1, ...}
--   {'unknown_category'}      the category has no seats in this partition
--   {'none'}                  no N adjacent free seats in one row (or, with gap_free_only,
--                             none that leaves no single-seat gap)
--   {'limit', used, limit}    the buyer would exceed the per-event limit
--   {'duplicate'}             hold_id already exists
--   {'not_loaded'}            the partition has no catalog (not loaded / lost)
--   {'budget', retry_ms}      the buyer spent their attempts; the next is allowed in retry_ms
--   {'shut', state}           the sale is shut (gate key, see hold.lua)
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local hold_id, buyer = ARGV[1], ARGV[2]
local ttl, max_life, limit = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local category, quantity, sweep_limit = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local interval, burst = tonumber(ARGV[9] or '0'), tonumber(ARGV[10] or '1')
local accessible, reserved_until = ARGV[11] == '1', tonumber(ARGV[12] or '0')
local gap_free_only = ARGV[13] == '1'

local now = TB.now_ms()

local wait = TB.spend_budget(buyer, now, interval, burst)
if wait then return {'budget', wait} end

local gate = redis.call('GET', TB.K.gate)
if gate then return {'shut', gate} end

if redis.call('EXISTS', TB.K.seats) == 0 then return {'not_loaded'} end

local rows = TB.split(redis.call('HGET', TB.K.catrows, category))
if #rows == 0 then return {'unknown_category'} end

local used = TB.buyer_usage(buyer, now, true)
if used + quantity > limit then return {'limit', used, limit} end

if redis.call('HEXISTS', TB.K.holds, hold_id) == 1 then return {'duplicate'} end

TB.sweep(now, sweep_limit)

local fields = {}
for i, row in ipairs(rows) do fields[i] = category .. '|' .. row end
local free_counts = TB.hmget(TB.K.avail, fields)

-- Accessible seats (wheelchair spaces, companion seats) go only to requests that ask,
-- until reserved_until; a request that asks gets only those.
local filter = accessible or (now < reserved_until and redis.call('EXISTS', TB.K.access) == 1)

-- Free for this request: free, and on the right side of the accessibility filter.
local function usable(state, flag)
  if TB.decode(state, now) ~= 'free' then return false end
  if not filter then return true end
  if accessible then return flag ~= nil end
  return flag == nil
end

-- Best run in one row: returns start index and whether it is gap-free.
local function pick(seats, states, flags)
  local fallback = nil
  local i, n = 1, #seats
  while i <= n do
    if usable(states[i], flags[i]) then
      local j = i
      while j < n and usable(states[j + 1], flags[j + 1])
          and TB.number_of(seats[j + 1]) == TB.number_of(seats[j]) + 1 do
        j = j + 1
      end
      local len = j - i + 1
      if len == quantity or len - quantity >= 2 then return i, true end
      if len > quantity and not fallback then fallback = i end
      i = j + 1
    else
      i = i + 1
    end
  end
  return fallback, false
end

local chosen = nil
for r, field in ipairs(fields) do
  if tonumber(free_counts[r] or '0') >= quantity then
    local seats = TB.split(redis.call('HGET', TB.K.rowseats, field))
    local states = TB.hmget(TB.K.state, seats)
    local flags = {}
    if filter then
      for k, v in ipairs(TB.hmget(TB.K.access, seats)) do flags[k] = v or nil end
    end
    local start, clean = pick(seats, states, flags)
    if start then
      local c = {seats = {}, prev = {}}
      for k = start, start + quantity - 1 do
        c.seats[#c.seats + 1] = seats[k]
        c.prev[#c.prev + 1] = states[k]
      end
      if clean then chosen = c break end
      if not chosen and not gap_free_only then chosen = c end
    end
  end
end
if not chosen then return {'none'} end

local cats = {}
for i = 1, quantity do cats[i] = category end
local version, rec = TB.take(hold_id, buyer, chosen.seats, cats, chosen.prev, now, ttl, max_life)
return TB.hold_reply(hold_id, rec, version)
