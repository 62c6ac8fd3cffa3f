-- buyer_usage.lua: seats a buyer has in this partition (live held + pending + sold).
--
-- Used when an event has several partitions: the limit is per event, so a
-- hold in one partition subtracts the buyer's usage in the others. Writes nothing.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: buyer
-- Returns: seat count
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

return TB.buyer_usage(ARGV[1], TB.now_ms(), false)
