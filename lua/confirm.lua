-- confirm.lua: turn a live, owned hold into a pending order.
--
-- The hold's seats become sold-pending under order_id; the order records the
-- hold (buyer, seats, categories, times) so revert, mark_sold and reject can
-- act on it. Confirming the same hold with the same order again returns the
-- same result (a retried request); an order id already used for something
-- else is a conflict.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: hold_id, buyer, order_id
-- Returns:
--   {'ok', confirmed_ms, version, seat1, cat1, ...}
--   {'unknown'} | {'not_owner'} | {'expired'} | {'order_exists'}
--   {'shut', 'cancelled'}     the event was cancelled: no new order (a paused sale still
--                             lets a buyer finish the order of a hold made before)
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local hold_id, buyer, order_id = ARGV[1], ARGV[2], ARGV[3]
local now = TB.now_ms()

local function reply(order, version)
  local out = {'ok', order.p, version}
  for i, seat in ipairs(order.s) do
    out[#out + 1] = seat
    out[#out + 1] = order.c[i]
  end
  return out
end

local existing = redis.call('HGET', TB.K.orders, order_id)
if existing then
  local order = cjson.decode(existing)
  if order.h == hold_id and order.b == buyer and order.st == 'pending' then
    return reply(order, TB.version())
  end
  return {'order_exists'}
end

if redis.call('GET', TB.K.gate) == 'cancelled' then return {'shut', 'cancelled'} end

local rec, err = TB.owned_hold(hold_id, buyer, now)
if err then
  if err[1] == 'expired' then
    local dead = TB.get_hold(hold_id)
    if dead then TB.drop_hold(hold_id, dead, 'expire', now) end
  end
  return err
end

-- Defensive: every seat must still point at this hold.
local cur = TB.hmget(TB.K.state, rec.s)
local expected = TB.held_value(hold_id, rec.e)
for i = 1, #rec.s do
  if cur[i] ~= expected then return {'expired'} end
end

local value = 'p|' .. order_id
for _, seat in ipairs(rec.s) do redis.call('HSET', TB.K.state, seat, value) end
local order = {h = hold_id, b = rec.b, s = rec.s, c = rec.c, t = rec.t, e = rec.e,
  m = rec.m, l = rec.l, p = now, st = 'pending'}
redis.call('HSET', TB.K.orders, order_id, cjson.encode(order))
redis.call('HDEL', TB.K.holds, hold_id)
redis.call('ZREM', TB.K.hold_exp, hold_id)
TB.remove_buyer_hold(buyer, hold_id)
redis.call('HINCRBY', TB.K.buyer_sold, buyer, #rec.s)
local version = TB.delta('confirm', 'pending', rec.s, 'order', order_id)
return reply(order, version)
