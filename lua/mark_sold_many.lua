-- mark_sold_many.lua: mark_sold.lua for several orders of one partition in one call.
--
-- The persister calls this once per (event, partition) per batch instead of once per
-- order. Each order is settled exactly as mark_sold.lua does it (TB.mark_sold in
-- lib/prelude.lua): idempotent; an order Redis forgot has its given seats forced sold;
-- an order Redis marked otherwise (rejected) answers conflict. The caller bounds the
-- number of orders per call (core/inventory.py MANY_CHUNK).
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: per order, in order: order_id, buyer ('' when unknown), n, seat_1 .. seat_n
--       (n may be 0; the seats are used only for an unknown order)
-- Returns: per order, in order, two items: 'ok', seats changed | 'unknown', 0 |
--          'conflict', status
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local out = {}
local i = 1
while i <= #ARGV do
  local order_id, buyer, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local given = {}
  for j = i + 3, i + 2 + n do given[#given + 1] = ARGV[j] end
  i = i + 3 + n
  local code, value = TB.mark_sold(order_id, buyer, given)
  out[#out + 1] = code
  out[#out + 1] = value or 0
end
return out
