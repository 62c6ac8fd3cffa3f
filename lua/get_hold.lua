-- get_hold.lua: read one hold, owner only. Writes nothing.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: hold_id, buyer
-- Returns:
--   {'ok', hold_id, buyer, created_ms, expires_ms, max_expires_ms, version, seat1, cat1, ...}
--   {'unknown'} | {'not_owner'} | {'expired'}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local hold_id, buyer = ARGV[1], ARGV[2]
local rec, err = TB.owned_hold(hold_id, buyer, TB.now_ms())
if err then return err end
return TB.hold_reply(hold_id, rec, TB.version())
