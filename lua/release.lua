-- release.lua: give a hold's seats back, owner only.
--
-- Releasing an expired hold is not an error: its seats are freed either way.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: hold_id, buyer
-- Returns: {'ok', freed_seats} | {'unknown'} | {'not_owner'} | {'expired'}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local hold_id, buyer = ARGV[1], ARGV[2]
local now = TB.now_ms()

local rec = TB.get_hold(hold_id)
if not rec then
  if redis.call('ZSCORE', TB.K.tomb, hold_id) then return {'expired'} end
  return {'unknown'}
end
if rec.b ~= buyer then return {'not_owner'} end
if rec.e <= now then
  TB.drop_hold(hold_id, rec, 'expire', now)
  return {'expired'}
end
local freed = TB.drop_hold(hold_id, rec, 'release', now)
return {'ok', freed}
