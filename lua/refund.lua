-- refund.lua: a refunded order's seats go back on sale.
--
-- Called after PostgreSQL committed the refund (the tickets are revoked and marked
-- refunded there first), for the whole order or some of its seats. Each given seat that
-- is still sold under this order becomes free, with its free counters and one delta;
-- a seat that is not (freed by an earlier call, or already held or sold again) is left
-- alone, so calling it again is harmless. The order's record keeps the seats not
-- refunded; with none left it is 'refunded' (and keeps its seats as they were). The buyer's count of bought seats shrinks
-- by the seats freed, so the per-buyer limit counts only what the buyer still has.
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: order_id, seat_1 .. seat_n
-- Returns: {'ok', seats_freed}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local order_id = ARGV[1]
local given = {}
for i = 2, #ARGV do given[#given + 1] = ARGV[i] end
if #given == 0 then return {'ok', 0} end

local mine = 's|' .. order_id
local cur = TB.hmget(TB.K.state, given)
local cats = TB.hmget(TB.K.seats, given)
local freed, gone = {}, {}
for i, seat in ipairs(given) do
  if cur[i] == mine and cats[i] then
    redis.call('HDEL', TB.K.state, seat)
    TB.count_free(seat, cats[i], 1)
    freed[#freed + 1] = seat
    gone[seat] = true
  end
end
if #freed == 0 then return {'ok', 0} end

local raw = redis.call('HGET', TB.K.orders, order_id)
if raw then
  local order = cjson.decode(raw)
  local seats, keep_cats = {}, {}
  for i, seat in ipairs(order.s) do
    if not gone[seat] then
      seats[#seats + 1] = seat
      keep_cats[#keep_cats + 1] = order.c[i]
    end
  end
  -- With no seat left the record keeps its seats for the record (an empty Lua table
  -- would encode as a JSON object) and says 'refunded'.
  if #seats == 0 then order.st = 'refunded' else order.s, order.c = seats, keep_cats end
  redis.call('HSET', TB.K.orders, order_id, cjson.encode(order))
  if order.b and order.b ~= '' then
    redis.call('HINCRBY', TB.K.buyer_sold, order.b, -#freed)
  end
end
TB.delta('refund', 'free', freed, 'order', order_id)
return {'ok', #freed}
