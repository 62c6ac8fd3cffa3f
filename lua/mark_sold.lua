-- mark_sold.lua: pending -> sold, after the persister committed the order.
--
-- Idempotent: marking a sold order again is fine. If Redis no longer knows the
-- order (a rebuild or failover lost it), or rejected it (the reconciler released it
-- while the persister was only late), but PostgreSQL committed it, the caller passes
-- the order's seats and buyer: those seats become sold under the order whatever their
-- state (PostgreSQL is the arbiter), so the seat is never sold again from Redis.
--
-- The per-order logic is TB.mark_sold in lib/prelude.lua, shared with mark_sold_many.lua.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: order_id, buyer ('' when unknown), seat_1 .. seat_n (used only for an unknown order)
-- Returns: {'ok', sold_seats} | {'unknown'} | {'conflict', status} (a rejected order and
--          no seats given)
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local given = {}
for i = 3, #ARGV do given[#given + 1] = ARGV[i] end
local code, value = TB.mark_sold(ARGV[1], ARGV[2], given)
if code == 'unknown' then return {'unknown'} end
return {code, value}
