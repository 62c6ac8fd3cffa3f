-- wrk script: sell out an event. Each buyer holds a chunk of seats, then buys the hold.
--
-- Usage (the bench harness builds this command line):
--   wrk -tT -cK -d120s --timeout 10s -s loadtest/wrk/sellout.lua http://127.0.0.1:PORT -- \
--       EVENT_ID TOKENS_FILE SEATS_FILE CHUNK OUT_FILE THREADS
--
-- SEATS_FILE is cut into chunks of CHUNK seats; chunk c is bought by the buyer on
-- line c of TOKENS_FILE. With two threads, thread 0 walks the chunks forward and
-- thread 1 backward, so the two race for the same seats where they meet: that is
-- where a double sale would show. Past the meeting point every hold is a 409 (the other
-- thread was there first), so after STREAK 409s in a row a thread takes no new chunks.
-- A thread stops once it has nothing left to hold
-- or buy and nothing in flight; when the last one stops it sends wrk SIGINT (wrk
-- otherwise sleeps out its whole -d, which is only the upper bound).
-- A 201 hold is answered with POST /api/v1/orders {hold_id} (Idempotency-Key = hold
-- id) by the buyer who made it. OUT_FILE gets the order id of every 202, one a line.
-- The final line printed is JSON for the harness (see done()).

local threads = {}
local thread_count = 0
STREAK = 32

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local function read_lines(path)
  local lines = {}
  local f = assert(io.open(path, "r"))
  for line in f:lines() do
    if #line > 0 then
      lines[#lines + 1] = line
    end
  end
  f:close()
  return lines
end

function init(args)
  event_id = args[1]
  tokens = read_lines(args[2])
  seats = read_lines(args[3])
  chunk = tonumber(args[4])
  out_file = args[5]
  thread_total = tonumber(args[6] or "1") or 1
  finished = false
  hold_path = "/api/v1/events/" .. event_id .. "/holds"
  chunks = math.ceil(#seats / chunk)
  seat_chunk = {}
  for i, seat in ipairs(seats) do
    seat_chunk[seat] = math.floor((i - 1) / chunk) + 1
  end
  backward = (thread_index or 0) % 2 == 1
  cursor = 0           -- chunks taken so far by this thread
  to_buy = {}          -- FIFO of {hold_id, token}: to_buy[head..tail]
  to_buy_head = 1
  to_buy_tail = 0
  in_flight = 0
  order_ids = {}
  counts = { hold_201 = 0, order_202 = 0, conflict_409 = 0, other = 0, idle = 0 }
  streak = 0
  statuses = {}
end

local function headers(token)
  return {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }
end

local function next_chunk()
  if cursor >= chunks then
    return nil
  end
  cursor = cursor + 1
  if backward then
    return chunks - cursor + 1
  end
  return cursor
end

function request()
  if not verified then
    -- wrk calls request() once on thread 0 to check the script; send nothing real.
    verified = true
    if (thread_index or 0) == 0 then
      return wrk.format("GET", "/healthz")
    end
  end
  in_flight = in_flight + 1
  local buy = to_buy[to_buy_head]
  if buy ~= nil then
    to_buy[to_buy_head] = nil
    to_buy_head = to_buy_head + 1
    local h = headers(buy[2])
    h["Idempotency-Key"] = buy[1]
    return wrk.format("POST", "/api/v1/orders", h, '{"hold_id":"' .. buy[1] .. '"}')
  end
  local c = next_chunk()
  if c == nil then
    -- Nothing to send until an order answer arrives: a cheap probe keeps the
    -- connection busy (wrk must send something); counted as idle.
    counts.idle = counts.idle + 1
    return wrk.format("GET", "/healthz")
  end
  local first = (c - 1) * chunk + 1
  local last = math.min(c * chunk, #seats)
  local parts = {}
  for i = first, last do
    parts[#parts + 1] = '"' .. seats[i] .. '"'
  end
  return wrk.format("POST", hold_path, headers(tokens[(c - 1) % #tokens + 1]),
    '{"seats":[' .. table.concat(parts, ",") .. ']}')
end

function delay()
  -- Back off a little when there is nothing to hold and nothing to buy.
  if to_buy[to_buy_head] == nil and cursor >= chunks then
    return 5
  end
  return 0
end

function response(status, hdrs, body)
  in_flight = in_flight - 1
  statuses[tostring(status)] = (statuses[tostring(status)] or 0) + 1
  if status == 201 then
    streak = 0
    local hold_id = string.match(body, '"hold_id"%s*:%s*"([^"]+)"')
    -- seats: [{"seat_id": ...}, ...] (api/holds/schemas.py HoldView); the first names the chunk.
    local seat = string.match(body, '"seat_id"%s*:%s*"([^"]+)"')
    local c = seat and seat_chunk[seat]
    if hold_id and c then
      counts.hold_201 = counts.hold_201 + 1
      to_buy_tail = to_buy_tail + 1
      to_buy[to_buy_tail] = { hold_id, tokens[(c - 1) % #tokens + 1] }
    else
      counts.other = counts.other + 1
    end
  elseif status == 202 then
    local order_id = string.match(body, '"order_id"%s*:%s*"([^"]+)"')
    if order_id then
      counts.order_202 = counts.order_202 + 1
      order_ids[#order_ids + 1] = order_id
    else
      counts.other = counts.other + 1
    end
  elseif status == 409 then
    counts.conflict_409 = counts.conflict_409 + 1
    streak = streak + 1
    if streak >= STREAK then
      cursor = chunks -- met the other thread: everything ahead is taken
    end
  elseif status ~= 200 then
    counts.other = counts.other + 1
  end
  if not finished and cursor >= chunks and to_buy[to_buy_head] == nil and in_flight <= 0 then
    finished = true
    -- Count finished threads in a file beside OUT_FILE; the last one ends the run.
    local marker = out_file .. ".finished"
    local f = assert(io.open(marker, "a"))
    f:write(tostring(thread_index or 0), "\n")
    f:close()
    local n = 0
    for _ in io.lines(marker) do
      n = n + 1
    end
    if n >= thread_total then
      os.execute("(sleep 0.01; kill -INT $PPID) &")
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local totals = {}
  local all_statuses = {}
  local f = assert(io.open(threads[1]:get("out_file"), "w"))
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("counts")) do
      totals[k] = (totals[k] or 0) + v
    end
    for k, v in pairs(thread:get("statuses")) do
      all_statuses[k] = (all_statuses[k] or 0) + v
    end
    for _, id in ipairs(thread:get("order_ids")) do
      f:write(id, "\n")
    end
  end
  f:close()
  local parts = {}
  for k, v in pairs(totals) do
    parts[#parts + 1] = string.format('"%s": %d', k, v)
  end
  local sparts = {}
  for k, v in pairs(all_statuses) do
    sparts[#sparts + 1] = string.format('"%s": %d', k, v)
  end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "timeouts": %d, "read_errors": %d, '
      .. '"p50_us": %d, "p99_us": %d, "max_us": %d, "counts": {%s}, "statuses": {%s}}\n',
    summary.requests, summary.duration, summary.errors.timeout, summary.errors.read,
    latency:percentile(50), latency:percentile(99), latency.max,
    table.concat(parts, ", "), table.concat(sparts, ", ")))
end
