-- statuses.lua: the raw state of every seat that is not plainly free, with the version.
--
-- A consistent snapshot: the version is the last delta included, so a client
-- applies deltas after it. The entries are returned raw with the server time
-- and decoded by core/inventory.py (an expired hold there is free): Redis does
-- the O(n) copy only, the API processes do the parsing. Writes nothing.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: none
-- Returns: {version, server_ms, seat1, state1, seat2, state2, ...}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local out = {TB.version(), TB.now_ms()}
local all = redis.call('HGETALL', TB.K.state)
for i = 1, #all do out[#out + 1] = all[i] end
return out
