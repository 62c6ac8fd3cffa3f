-- extend.lua: push a live hold's expiry out by its TTL, owner only.
--
-- The new expiry is min(now + ttl, created + max_lifetime): a hold never
-- lives longer than the cap, however often it is extended. At the cap the
-- hold is returned unchanged. Extending changes no seat status, so no delta.
-- An expired hold found here is swept (seats freed, 'free' delta).
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
local now = TB.now_ms()

local rec, err = TB.owned_hold(hold_id, buyer, now)
if err then
  if err[1] == 'expired' then
    local dead = TB.get_hold(hold_id)
    if dead then TB.drop_hold(hold_id, dead, 'expire', now) end
  end
  return err
end

local exp = math.min(now + rec.l, rec.m)
if exp > rec.e then
  -- Only seats still pointing at this hold (mark_sold of a forgotten order may
  -- have taken one over).
  local old = TB.held_value(hold_id, rec.e)
  local cur = TB.hmget(TB.K.state, rec.s)
  local value = TB.held_value(hold_id, exp)
  for i, seat in ipairs(rec.s) do
    if cur[i] == old then redis.call('HSET', TB.K.state, seat, value) end
  end
  rec.e = exp
  TB.put_hold(hold_id, rec)
end
return TB.hold_reply(hold_id, rec, TB.version())
