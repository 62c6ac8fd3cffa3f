-- mark_sold.lua: pending -> sold, after the persister committed the order.
--
-- Idempotent: marking a sold order again is fine. If Redis no longer knows the
-- order (a rebuild or failover lost it) but PostgreSQL committed it, the
-- caller passes the order's seats and buyer: those seats become sold under the
-- order whatever their state (PostgreSQL is the arbiter), so the seat is never
-- sold again from Redis.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: order_id, buyer ('' when unknown), seat_1 .. seat_n (used only for an unknown order)
-- Returns: {'ok', sold_seats} | {'unknown'} | {'conflict', status}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local order_id, buyer = ARGV[1], ARGV[2]
local value = 's|' .. order_id

local raw = redis.call('HGET', TB.K.orders, order_id)
if not raw then
  if #ARGV < 3 then return {'unknown'} end
  local given = {}
  for i = 3, #ARGV do given[#given + 1] = ARGV[i] end
  local cats = TB.hmget(TB.K.seats, given)
  local cur = TB.hmget(TB.K.state, given)
  local order = {h = '', b = buyer, s = {}, c = {}, t = 0, e = 0, m = 0, l = 0, p = 0, st = 'sold'}
  for i, seat in ipairs(given) do
    if cats[i] then
      if not cur[i] then TB.count_free(seat, cats[i], -1) end
      redis.call('HSET', TB.K.state, seat, value)
      order.s[#order.s + 1] = seat
      order.c[#order.c + 1] = cats[i]
    end
  end
  if #order.s == 0 then return {'unknown'} end
  redis.call('HSET', TB.K.orders, order_id, cjson.encode(order))
  if buyer ~= '' then redis.call('HINCRBY', TB.K.buyer_sold, buyer, #order.s) end
  TB.delta('sold', 'sold', order.s, 'order', order_id)
  return {'ok', #order.s}
end

local order = cjson.decode(raw)
if order.st == 'sold' then return {'ok', 0} end
if order.st ~= 'pending' then return {'conflict', order.st} end

local mine = 'p|' .. order_id
local cur = TB.hmget(TB.K.state, order.s)
local seats = {}
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
