-- mark_sold.lua: pending -> sold, after the persister committed the order.
--
-- Idempotent: marking a sold order again is fine.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: order_id
-- Returns: {'ok', sold_seats} | {'unknown'} | {'conflict', status}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local order_id = ARGV[1]

local raw = redis.call('HGET', TB.K.orders, order_id)
if not raw then return {'unknown'} end
local order = cjson.decode(raw)
if order.st == 'sold' then return {'ok', 0} end
if order.st ~= 'pending' then return {'conflict', order.st} end

local mine = 'p|' .. order_id
local cur = TB.hmget(TB.K.state, order.s)
local seats = {}
local value = 's|' .. order_id
for i, seat in ipairs(order.s) do
  if cur[i] == mine then
    redis.call('HSET', TB.K.state, seat, value)
    seats[#seats + 1] = seat
  end
end
order.st = 'sold'
redis.call('HSET', TB.K.orders, order_id, cjson.encode(order))
if #seats > 0 then TB.delta('sold', 'sold', seats, 'order', order_id) end
return {'ok', #seats}
