-- availability.lua: free seats per category. Writes nothing.
--
-- The counters count seats with no state entry; seats of holds that expired
-- but were not swept yet are added back (lazy expiry), up to 1000 such holds.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: none
-- Returns: {category1, free1, category2, free2, ...}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local now = TB.now_ms()
local free = {}
local order = {}
local all = redis.call('HGETALL', TB.K.catfree)
for i = 1, #all, 2 do
  free[all[i]] = tonumber(all[i + 1])
  order[#order + 1] = all[i]
end
local due = redis.call('ZRANGEBYSCORE', TB.K.hold_exp, '-inf', now, 'LIMIT', 0, 1000)
for _, hid in ipairs(due) do
  local rec = TB.get_hold(hid)
  if rec then
    local cur = TB.hmget(TB.K.state, rec.s)
    for i, seat in ipairs(rec.s) do
      local _, ref = TB.decode(cur[i], now)
      if ref == hid and free[rec.c[i]] then free[rec.c[i]] = free[rec.c[i]] + 1 end
    end
  end
end
local out = {}
for _, cat in ipairs(order) do
  out[#out + 1] = cat
  out[#out + 1] = free[cat]
end
return out
