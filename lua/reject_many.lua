-- reject_many.lua: reject.lua for several orders of one partition in one call.
--
-- The persister calls this once per (event, partition) per batch instead of once per
-- order. Each order is settled exactly as reject.lua does it (TB.reject in
-- lib/prelude.lua): only seats still pending under it are freed; an unknown or
-- already rejected order is a no-op; a sold order answers conflict. The caller bounds
-- the number of orders per call (core/inventory.py MANY_CHUNK).
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: order_id_1 .. order_id_n
-- Returns: per order, in order, two items: 'ok', seats freed | 'conflict', status
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local out = {}
for i = 1, #ARGV do
  local code, value = TB.reject(ARGV[i])
  out[#out + 1] = code
  out[#out + 1] = value
end
return out
