-- revert.lua: undo a confirm whose OrderPlaced publish failed.
--
-- The order's pending seats go back to the original hold with its original
-- expiry, so the buyer can retry. If that expiry has passed meanwhile, the
-- seats are freed instead. Only a pending order can be reverted.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: order_id
-- Returns: {'ok', hold_id, 'held'|'free'} | {'unknown'} | {'not_pending', status}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local order_id = ARGV[1]
local now = TB.now_ms()

local raw = redis.call('HGET', TB.K.orders, order_id)
if not raw then return {'unknown'} end
local order = cjson.decode(raw)
if order.st ~= 'pending' then return {'not_pending', order.st} end

local mine = 'p|' .. order_id
local cur = TB.hmget(TB.K.state, order.s)
local seats, cats = {}, {}
for i, seat in ipairs(order.s) do
  if cur[i] == mine then
    seats[#seats + 1] = seat
    cats[#cats + 1] = order.c[i]
  end
end

redis.call('HDEL', TB.K.orders, order_id)
redis.call('HINCRBY', TB.K.buyer_sold, order.b, -#order.s)

if order.e <= now then
  for i, seat in ipairs(seats) do
    redis.call('HDEL', TB.K.state, seat)
    TB.count_free(seat, cats[i], 1)
  end
  redis.call('ZADD', TB.K.tomb, now, order.h)
  if #seats > 0 then TB.delta('revert', 'free', seats, 'order', order_id) end
  return {'ok', order.h, 'free'}
end

local value = TB.held_value(order.h, order.e)
for _, seat in ipairs(seats) do redis.call('HSET', TB.K.state, seat, value) end
local rec = {b = order.b, s = seats, c = cats, t = order.t, e = order.e, m = order.m, l = order.l}
TB.put_hold(order.h, rec)
TB.add_buyer_hold(order.b, order.h)
if #seats > 0 then TB.delta('revert', 'held', seats, 'hold', order.h) end
return {'ok', order.h, 'held'}
