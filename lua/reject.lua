-- reject.lua: pending -> free, after the order was rejected downstream.
--
-- Only seats still pending under this order are freed. Idempotent: rejecting
-- a rejected order again is fine, and so is rejecting an order Redis does not
-- know (after a rebuild nothing is pending under it); a sold order cannot be
-- rejected.
--
-- The per-order logic is TB.reject in lib/prelude.lua, shared with reject_many.lua.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: order_id
-- Returns: {'ok', freed_seats} | {'conflict', status}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local code, value = TB.reject(ARGV[1])
return {code, value}
