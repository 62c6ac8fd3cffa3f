-- wrk script: one seat hold per request, each from a distinct buyer (round robin).
--
-- Usage (the bench harness builds this command line):
--   wrk -t1 -c64 -d10s -s loadtest/wrk/holds.lua http://127.0.0.1:PORT -- \
--       EVENT_ID TOKENS_FILE SEATS_FILE [PACE_MS] [THREADS]
--
-- TOKENS_FILE: one bearer token per line (one buyer each).
-- SEATS_FILE:  one seat id per line; request n holds seat n (threads interleave),
--              so the run measures the success path and never fights over a seat.
-- PACE_MS:     optional delay before each request on a connection, to hold the
--              offered load near a target rate (the "half of peak" run).
-- THREADS:     the -t value, so threads interleave seats without sharing one.
-- The final line printed is JSON for the harness (see done()).

local threads = {}
local thread_count = 0

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
  pace_ms = tonumber(args[4] or "0") or 0
  path = "/api/v1/events/" .. event_id .. "/holds"
  -- Thread i takes requests i, i+T, i+2T... so no two threads share a seat.
  n = thread_index or 0
  step = tonumber(args[5] or "1") or 1
  status_counts = {}
  sent = 0
end

function request()
  local seat_index = (sent * step + n) % #seats + 1
  local token = tokens[(sent * step + n) % #tokens + 1]
  sent = sent + 1
  local body = '{"seats":["' .. seats[seat_index] .. '"]}'
  return wrk.format("POST", path, {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

function delay()
  return pace_ms
end

function response(status, headers, body)
  local key = tostring(status)
  status_counts[key] = (status_counts[key] or 0) + 1
end

function done(summary, latency, requests)
  local statuses = {}
  for _, thread in ipairs(threads) do
    local counts = thread:get("status_counts")
    for k, v in pairs(counts) do
      statuses[k] = (statuses[k] or 0) + v
    end
  end
  local parts = {}
  for k, v in pairs(statuses) do
    parts[#parts + 1] = string.format('"%s": %d', k, v)
  end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d, "non_2xx": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, '
      .. '"statuses": {%s}}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, table.concat(parts, ", ")))
end
