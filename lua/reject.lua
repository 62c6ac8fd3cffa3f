-- reject.lua: pending -> free, after the order was rejected downstream.
--
-- Only seats still pending under this order are freed. Idempotent: rejecting
-- a rejected order again is fine, and so is rejecting an order Redis does not
-- know (after a rebuild nothing is pending under it); a sold order cannot be
-- rejected.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: order_id
-- Returns: {'ok', freed_seats} | {'conflict', status}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local order_id = ARGV[1]

local raw = redis.call('HGET', TB.K.orders, order_id)
if not raw then return {'ok', 0} end
local order = cjson.decode(raw)
if order.st == 'rejected' then return {'ok', 0} end
if order.st ~= 'pending' then return {'conflict', order.st} end

local mine = 'p|' .. order_id
local cur = TB.hmget(TB.K.state, order.s)
local freed = {}
for i, seat in ipairs(order.s) do
  if cur[i] == mine then
    redis.call('HDEL', TB.K.state, seat)
    TB.count_free(seat, order.c[i], 1)
    freed[#freed + 1] = seat
  end
end
redis.call('HINCRBY', TB.K.buyer_sold, order.b, -#order.s)
order.st = 'rejected'
redis.call('HSET', TB.K.orders, order_id, cjson.encode(order))
if #freed > 0 then TB.delta('reject', 'free', freed, 'order', order_id) end
return {'ok', #freed}
