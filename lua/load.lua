-- load.lua: (re)build a partition's inventory: the seat catalog and the sold seats.
--
-- Used for seeding and for a cold start (rebuild from PostgreSQL). Everything
-- in the partition is replaced: catalog, seat states, holds, orders, buyer
-- counters. The change stream is kept, and a 'reload' delta is appended, so
-- versions keep increasing across a rebuild; clients seeing it resync. If the
-- stream itself was lost, min_version (the last version known elsewhere) makes
-- the new entry's id larger than it.
-- Seat order defines row preference for best-available: a row's first
-- appearance ranks it (front of the venue first).
--
-- KEYS: the partition key set (lib/prelude.lua, prepended by core/inventory.py)
-- ARGV: min_version ('' or '<ms>-<seq>'),
--       seats: one line per seat, "<seat>\t<category>", lines joined by "\n",
--       sold: one line per sold seat, "<seat>\t<order_id>\t<buyer or empty>",
--       access (optional): one line per accessible seat, "<seat>\t<w|c>" (wheelchair space,
--       companion seat); best_available.lua keeps them for requests that ask
--       (two packed strings rather than 2 x 80,000 arguments: far cheaper to send)
-- Returns: {version, seats_loaded, sold_marked, sold_ignored}
--
-- luacheck: globals KEYS ARGV redis cjson
-- luacheck: read globals TB

local min_version, seat_lines, sold_lines = ARGV[1], ARGV[2], ARGV[3]
local access_lines = ARGV[4] or ''

for _, key in ipairs({TB.K.seats, TB.K.rowseats, TB.K.catrows, TB.K.avail, TB.K.catfree,
    TB.K.state, TB.K.holds, TB.K.hold_exp, TB.K.buyer_holds, TB.K.buyer_sold, TB.K.orders,
    TB.K.tomb, TB.K.access}) do
  redis.call('UNLINK', key)
end

-- Write a Lua table as hash fields, in chunks.
local function hset_all(key, map)
  local args = {}
  for field, value in pairs(map) do
    args[#args + 1] = field
    args[#args + 1] = value
    if #args >= 4000 then
      redis.call('HSET', key, unpack(args))
      args = {}
    end
  end
  if #args > 0 then redis.call('HSET', key, unpack(args)) end
end

local catalog, number = {}, {}
local cat_rows, row_seats, avail, catfree = {}, {}, {}, {}
local n = 0
for seat, cat in string.gmatch(seat_lines, '([^\t\n]+)\t([^\n]+)') do
  local row, num = string.match(seat, '^(.*)%-(%d+)$')
  catalog[seat] = cat
  number[seat] = tonumber(num)
  local field = cat .. '|' .. row
  local list = row_seats[field]
  if not list then
    list = {}
    row_seats[field] = list
    avail[field] = 0
    local rows = cat_rows[cat]
    if not rows then
      rows = {}
      cat_rows[cat] = rows
    end
    rows[#rows + 1] = row
  end
  list[#list + 1] = seat
  avail[field] = avail[field] + 1
  catfree[cat] = (catfree[cat] or 0) + 1
  n = n + 1
end
hset_all(TB.K.seats, catalog)

local access = {}
for seat, flag in string.gmatch(access_lines, '([^\t\n]+)\t([wc])') do
  if catalog[seat] then access[seat] = flag end
end
hset_all(TB.K.access, access)

local rows_csv = {}
for field, seats in pairs(row_seats) do
  table.sort(seats, function(a, b) return number[a] < number[b] end)
  rows_csv[field] = table.concat(seats, ',')
end
hset_all(TB.K.rowseats, rows_csv)
local cats_csv = {}
for cat, rows in pairs(cat_rows) do cats_csv[cat] = table.concat(rows, ',') end
hset_all(TB.K.catrows, cats_csv)

-- Sold seats.
local sold_states, orders, buyer_sold = {}, {}, {}
local marked, ignored = 0, 0
for line in string.gmatch(sold_lines, '[^\n]+') do
  local seat, order_id, buyer = string.match(line, '^([^\t]*)\t([^\t]*)\t(.*)$')
  local cat = catalog[seat]
  if cat and not sold_states[seat] then
    sold_states[seat] = 's|' .. order_id
    local field = cat .. '|' .. TB.row_of(seat)
    avail[field] = avail[field] - 1
    catfree[cat] = catfree[cat] - 1
    local order = orders[order_id]
    if not order then
      order = {h = '', b = buyer, s = {}, c = {}, t = 0, e = 0, m = 0, l = 0, p = 0, st = 'sold'}
      orders[order_id] = order
    end
    table.insert(order.s, seat)
    table.insert(order.c, cat)
    if buyer ~= '' then buyer_sold[buyer] = (buyer_sold[buyer] or 0) + 1 end
    marked = marked + 1
  else
    ignored = ignored + 1
  end
end
hset_all(TB.K.state, sold_states)
local orders_json = {}
for order_id, order in pairs(orders) do orders_json[order_id] = cjson.encode(order) end
hset_all(TB.K.orders, orders_json)
hset_all(TB.K.buyer_sold, buyer_sold)
hset_all(TB.K.avail, avail)
hset_all(TB.K.catfree, catfree)

-- The reload delta: above min_version even if the stream was lost.
local id = '*'
if min_version ~= '' then
  local ms, seq = string.match(min_version, '^(%d+)%-(%d+)$')
  local lms, lseq = string.match(TB.version(), '^(%d+)%-(%d+)$')
  ms, seq, lms, lseq = tonumber(ms), tonumber(seq), tonumber(lms), tonumber(lseq)
  if ms and (ms > lms or (ms == lms and seq >= lseq)) and ms >= TB.now_ms() then
    id = string.format('%d', ms) .. '-' .. string.format('%d', seq + 1)
  end
end
local version = redis.call('XADD', TB.K.stream, 'MAXLEN', '~', TB.STREAM_MAXLEN, id,
  'seats', '', 'status', 'reload', 'op', 'load')
return {version, n, marked, ignored}
