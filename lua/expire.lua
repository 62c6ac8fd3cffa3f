-- expire.lua: the sweep. Releases holds past their expiry, with 'free' deltas.
--
-- Expiry is also lazy: every script treats an expired hold as free, so the
-- sweep only keeps counters and the live map tidy. Also trims tombstones.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: limit (most holds expired by one call)
-- Returns: number of holds expired
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

return TB.sweep(TB.now_ms(), tonumber(ARGV[1]))
