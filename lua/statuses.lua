-- statuses.lua: the live status of every seat that is not free, with the version.
--
-- A consistent snapshot: the version is the last delta included, so a client
-- applies deltas after it. Free seats (no entry, or an expired hold) are left
-- out; the caller knows the layout. Writes nothing.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: none
-- Returns: {version, seat1, status1, seat2, status2, ...}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local now = TB.now_ms()
local out = {TB.version()}
local all = redis.call('HGETALL', TB.K.state)
for i = 1, #all, 2 do
  local status = TB.decode(all[i + 1], now)
  if status ~= 'free' then
    out[#out + 1] = all[i]
    out[#out + 1] = status
  end
end
return out
