-- prelude.lua: shared helpers for every inventory script.
--
-- core/inventory.py prepends this file to each lua/<operation>.lua before
-- loading it, so one script = prelude + operation, run atomically in one slot.
--
-- Every script receives the same KEYS, all under one hash tag
-- {ev:<event_id>:<partition>}, built in Python (core/inventory.py KEY_NAMES):
--   KEYS[1]  seats       hash  seat_id -> category (the partition's catalog)
--   KEYS[2]  rowseats    hash  "<category>|<section>-<row>" -> seat ids, comma list, by number
--   KEYS[3]  catrows     hash  category -> rows "<section>-<row>", comma list, best first
--   KEYS[4]  avail       hash  "<category>|<section>-<row>" -> seats with no state entry
--   KEYS[5]  catfree     hash  category -> seats with no state entry
--   KEYS[6]  state       hash  seat_id -> "h|<expires_ms>|<hold_id>" | "p|<order_id>" | "s|<order_id>"
--                              (no entry = free; an expired "h" entry also counts as free)
--   KEYS[7]  holds       hash  hold_id -> json {b, s, c, t, e, m, l}
--   KEYS[8]  hold_exp    zset  hold_id -> expires_ms (for the sweep)
--   KEYS[9]  buyer_holds hash  buyer -> hold ids, comma list (pruned lazily)
--   KEYS[10] buyer_sold  hash  buyer -> pending + sold seats
--   KEYS[11] orders      hash  order_id -> json {h, b, s, c, t, e, m, l, st}
--   KEYS[12] tomb        zset  hold_id -> expired_at_ms (expired holds, kept a day for exact errors)
--   KEYS[13] budget      zset  buyer -> theoretical arrival time (ms) of the buyer's hold attempts
--   KEYS[14] gate        string: set while the event's sale is shut ('draft', 'paused',
--                              'closed', 'cancelled'; lua/gate.lua); no key = open
--   KEYS[15] access      hash  seat_id -> 'w' (wheelchair space) | 'c' (companion seat)
--   KEYS[16] stream      stream of seat deltas; the entry id is the partition's version
--
-- luacheck: globals KEYS ARGV redis cjson

local TB = {}

TB.K = {
  seats = KEYS[1], rowseats = KEYS[2], catrows = KEYS[3], avail = KEYS[4],
  catfree = KEYS[5], state = KEYS[6], holds = KEYS[7], hold_exp = KEYS[8],
  buyer_holds = KEYS[9], buyer_sold = KEYS[10], orders = KEYS[11], tomb = KEYS[12],
  budget = KEYS[13], gate = KEYS[14], access = KEYS[15], stream = KEYS[16],
}

-- Deltas kept per partition; a client further behind resyncs from a snapshot.
TB.STREAM_MAXLEN = 10000
-- How long an expired hold is remembered so confirm/extend can say "expired".
TB.TOMB_MS = 86400000

-- Server time in ms since the epoch.
function TB.now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- "101-C-14" -> "101-C"
-- The buyer's request budget in this event (GCRA): each hold attempt spends one cell of
-- `interval_ms`, and at most `burst` attempts may come at once. It lives in the event's
-- slot, so checking it costs no round trip of its own. Entries whose time has passed are
-- the same as no entry and are pruned as they go stale.
-- Returns nil when the attempt is allowed, else the ms until one is.
function TB.spend_budget(buyer, now, interval, burst)
  if interval <= 0 then return nil end
  redis.call('ZREMRANGEBYSCORE', TB.K.budget, '-inf', now)
  local tat = tonumber(redis.call('ZSCORE', TB.K.budget, buyer)) or now
  if tat < now then tat = now end
  local allow_at = tat + interval - burst * interval
  if now < allow_at then return math.ceil(allow_at - now) end
  redis.call('ZADD', TB.K.budget, tat + interval, buyer)
  return nil
end

-- "101-C-14" -> "101-C"
function TB.row_of(seat)
  return string.match(seat, '^(.*)%-%d+$')
end

function TB.number_of(seat)
  return tonumber(string.match(seat, '%-(%d+)$'))
end

function TB.split(s)
  local out = {}
  if not s or s == '' then return out end
  for part in string.gmatch(s, '[^,]+') do out[#out + 1] = part end
  return out
end

-- Decode a state entry (false/nil = no entry).
-- Returns status ('free'|'held'|'pending'|'sold'), ref (hold or order id), expires_ms.
-- An expired hold decodes as 'free' with its hold id as ref.
function TB.decode(v, now)
  if not v then return 'free', nil, nil end
  local kind = string.sub(v, 1, 1)
  if kind == 'h' then
    local exp, hid = string.match(v, '^h|(%d+)|(.+)$')
    exp = tonumber(exp)
    if exp <= now then return 'free', hid, exp end
    return 'held', hid, exp
  elseif kind == 'p' then
    return 'pending', string.sub(v, 3), nil
  end
  return 'sold', string.sub(v, 3), nil
end

function TB.held_value(hold_id, exp)
  return 'h|' .. string.format('%d', exp) .. '|' .. hold_id
end

-- HMGET in chunks (Lua's unpack has a small limit).
function TB.hmget(key, fields)
  local out = {}
  local n = #fields
  local i = 1
  while i <= n do
    local j = math.min(i + 999, n)
    local part = redis.call('HMGET', key, unpack(fields, i, j))
    for k = 1, #part do out[#out + 1] = part[k] end
    i = j + 1
  end
  return out
end

-- A seat gains or loses its state entry: keep the free counters exact.
function TB.count_free(seat, category, delta)
  redis.call('HINCRBY', TB.K.avail, category .. '|' .. TB.row_of(seat), delta)
  redis.call('HINCRBY', TB.K.catfree, category, delta)
end

-- Append a seat delta; returns the new version (stream id).
function TB.delta(op, status, seats, ref_field, ref)
  local args = {'XADD', TB.K.stream, 'MAXLEN', '~', TB.STREAM_MAXLEN, '*',
    'seats', table.concat(seats, ','), 'status', status, 'op', op}
  if ref_field then
    args[#args + 1] = ref_field
    args[#args + 1] = ref
  end
  return redis.call(unpack(args))
end

function TB.version()
  local last = redis.call('XREVRANGE', TB.K.stream, '+', '-', 'COUNT', 1)
  if #last == 0 then return '0-0' end
  return last[1][1]
end

function TB.get_hold(hold_id)
  local raw = redis.call('HGET', TB.K.holds, hold_id)
  if not raw then return nil end
  return cjson.decode(raw)
end

function TB.put_hold(hold_id, rec)
  redis.call('HSET', TB.K.holds, hold_id, cjson.encode(rec))
  redis.call('ZADD', TB.K.hold_exp, rec.e, hold_id)
end

-- Reply shape shared by hold, best_available, extend, get_hold and revert:
-- {'ok', hold_id, buyer, created_ms, expires_ms, max_expires_ms, version, seat1, cat1, ...}
function TB.hold_reply(hold_id, rec, version)
  local out = {'ok', hold_id, rec.b, rec.t, rec.e, rec.m, version}
  for i, seat in ipairs(rec.s) do
    out[#out + 1] = seat
    out[#out + 1] = rec.c[i]
  end
  return out
end

-- Set the buyer's hold list, dropping the entry when empty.
local function set_buyer_holds(buyer, ids)
  if #ids == 0 then
    redis.call('HDEL', TB.K.buyer_holds, buyer)
  else
    redis.call('HSET', TB.K.buyer_holds, buyer, table.concat(ids, ','))
  end
end

-- Seats the buyer has in live holds, pruning dead hold ids from the list.
function TB.buyer_live_seats(buyer, now, prune)
  local ids = TB.split(redis.call('HGET', TB.K.buyer_holds, buyer))
  local keep, seats = {}, 0
  for _, hid in ipairs(ids) do
    local rec = TB.get_hold(hid)
    if rec and rec.e > now then
      keep[#keep + 1] = hid
      seats = seats + #rec.s
    end
  end
  if prune and #keep ~= #ids then set_buyer_holds(buyer, keep) end
  return seats
end

-- Live held + pending + sold seats of the buyer in this partition.
function TB.buyer_usage(buyer, now, prune)
  local sold = tonumber(redis.call('HGET', TB.K.buyer_sold, buyer) or '0')
  return TB.buyer_live_seats(buyer, now, prune) + sold
end

function TB.add_buyer_hold(buyer, hold_id)
  local ids = TB.split(redis.call('HGET', TB.K.buyer_holds, buyer))
  ids[#ids + 1] = hold_id
  set_buyer_holds(buyer, ids)
end

function TB.remove_buyer_hold(buyer, hold_id)
  local ids = TB.split(redis.call('HGET', TB.K.buyer_holds, buyer))
  local keep = {}
  for _, hid in ipairs(ids) do
    if hid ~= hold_id then keep[#keep + 1] = hid end
  end
  if #keep ~= #ids then set_buyer_holds(buyer, keep) end
end

-- Write a new hold on seats whose current entries are `prev` (from HMGET).
-- Every seat must be free (no entry or an expired hold). Returns the version.
function TB.take(hold_id, buyer, seats, cats, prev, now, ttl, max_life)
  local exp = now + ttl
  local value = TB.held_value(hold_id, exp)
  for i, seat in ipairs(seats) do
    if not prev[i] then TB.count_free(seat, cats[i], -1) end
    redis.call('HSET', TB.K.state, seat, value)
  end
  local rec = {b = buyer, s = seats, c = cats, t = now, e = exp, m = now + max_life, l = ttl}
  TB.put_hold(hold_id, rec)
  TB.add_buyer_hold(buyer, hold_id)
  return TB.delta('hold', 'held', seats, 'hold', hold_id), rec
end

-- Drop a hold: free the seats that still belong to it, forget the record.
-- `op` is 'release' or 'expire'. Expired holds go to the tombstones.
function TB.drop_hold(hold_id, rec, op, now)
  local cur = TB.hmget(TB.K.state, rec.s)
  local freed = {}
  for i, seat in ipairs(rec.s) do
    local v = cur[i]
    if v and string.sub(v, 1, 1) == 'h' and string.match(v, '^h|%d+|(.+)$') == hold_id then
      redis.call('HDEL', TB.K.state, seat)
      TB.count_free(seat, rec.c[i], 1)
      freed[#freed + 1] = seat
    end
  end
  redis.call('HDEL', TB.K.holds, hold_id)
  redis.call('ZREM', TB.K.hold_exp, hold_id)
  TB.remove_buyer_hold(rec.b, hold_id)
  if op == 'expire' then
    redis.call('ZADD', TB.K.tomb, now, hold_id)
  end
  local version = nil
  if #freed > 0 then version = TB.delta(op, 'free', freed, 'hold', hold_id) end
  return #freed, version
end

-- Expire up to `limit` holds whose time has passed. Returns how many.
function TB.sweep(now, limit)
  local due = redis.call('ZRANGEBYSCORE', TB.K.hold_exp, '-inf', now, 'LIMIT', 0, limit)
  for _, hid in ipairs(due) do
    local rec = TB.get_hold(hid)
    if rec then
      TB.drop_hold(hid, rec, 'expire', now)
    else
      redis.call('ZREM', TB.K.hold_exp, hid)
    end
  end
  redis.call('ZREMRANGEBYSCORE', TB.K.tomb, '-inf', now - TB.TOMB_MS)
  return #due
end

-- Look up a hold for an owner-only operation.
-- Returns rec, nil when alive and owned; nil, reply otherwise.
function TB.owned_hold(hold_id, buyer, now)
  local rec = TB.get_hold(hold_id)
  if not rec then
    if redis.call('ZSCORE', TB.K.tomb, hold_id) then return nil, {'expired'} end
    return nil, {'unknown'}
  end
  if rec.b ~= buyer then return nil, {'not_owner'} end
  if rec.e <= now then return nil, {'expired'} end
  return rec, nil
end

-- Pending -> sold for one order, after the persister committed it (mark_sold.lua,
-- mark_sold_many.lua). ``given`` is the order's seats, used only when Redis does not
-- know the order: they become sold under it whatever their state (PostgreSQL decided).
-- Returns code, value: 'ok', seats changed | 'unknown', nil | 'conflict', status.
-- The seats PostgreSQL committed for an order become sold under it, whatever Redis says
-- of them now (free, held, pending under another order): PostgreSQL is the arbiter. For
-- an order Redis lost, or one it rejected before the persister's commit arrived.
local function force_sold(order_id, buyer, given)
  local value = 's|' .. order_id
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
  if #order.s == 0 then return 'unknown', nil end
  redis.call('HSET', TB.K.orders, order_id, cjson.encode(order))
  if buyer ~= '' then redis.call('HINCRBY', TB.K.buyer_sold, buyer, #order.s) end
  TB.delta('sold', 'sold', order.s, 'order', order_id)
  return 'ok', #order.s
end

function TB.mark_sold(order_id, buyer, given)
  local value = 's|' .. order_id
  local raw = redis.call('HGET', TB.K.orders, order_id)
  if not raw then
    if #given == 0 then return 'unknown', nil end
    return force_sold(order_id, buyer, given)
  end

  local order = cjson.decode(raw)
  if order.st == 'sold' then return 'ok', 0 end
  if order.st ~= 'pending' then
    -- Rejected here (the reconciler gave up on it) but committed in PostgreSQL (the
    -- persister was only late): with the committed seats, PostgreSQL wins.
    if #given == 0 then return 'conflict', order.st end
    return force_sold(order_id, buyer ~= '' and buyer or (order.b or ''), given)
  end

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
  return 'ok', #seats
end

-- Pending -> free for one rejected order (reject.lua, reject_many.lua). Only seats still
-- pending under the order are freed; an unknown or already rejected order is a no-op.
-- Returns code, value: 'ok', seats freed | 'conflict', status.
function TB.reject(order_id)
  local raw = redis.call('HGET', TB.K.orders, order_id)
  if not raw then return 'ok', 0 end
  local order = cjson.decode(raw)
  if order.st == 'rejected' then return 'ok', 0 end
  if order.st ~= 'pending' then return 'conflict', order.st end

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
  return 'ok', #freed
end
