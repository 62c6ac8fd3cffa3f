-- gate.lua: shut or open the sale of one partition (the event lifecycle, core/venues.py).
--
-- While the gate key is set, hold.lua and best_available.lua refuse every hold with
-- {'shut', state}, and confirm.lua refuses orders when the state is 'cancelled'. A hold
-- script runs entirely before or entirely after this one (both run in the partition's
-- slot), so once this returns no hold in flight can still slip through.
-- The key survives load.lua (a rebuild keeps the sale shut).
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: state ('' opens the sale; else 'draft', 'paused', 'closed' or 'cancelled')
-- Returns: {previous state or ''}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local state = ARGV[1]
local previous = redis.call('GET', TB.K.gate) or ''
if state == '' then
  redis.call('DEL', TB.K.gate)
else
  redis.call('SET', TB.K.gate, state)
end
return {previous}
