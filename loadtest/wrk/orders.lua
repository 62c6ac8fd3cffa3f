-- wrk script: buy holds made beforehand, one order per request (the order path alone).
--
-- Usage (the bench harness builds this command line):
--   wrk -tT -c64 -d10s -s loadtest/wrk/orders.lua http://127.0.0.1:PORT -- \
--       HOLDS_FILE [THREADS]
--
-- HOLDS_FILE: one "TOKEN HOLD_ID" per line, a live hold of that token's buyer. Request n
--             buys the hold on line n (threads interleave, so no hold is bought twice):
--             POST /api/v1/orders {"hold_id": ...} with Idempotency-Key = the hold id.
--             The harness makes more holds than a run can buy; past the end, requests
--             wrap around and count as retries (202 again, the same order).
-- The final line printed is JSON for the harness (see done()).

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_index", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

function init(args)
  holds = {}
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    local token, hold_id = line:match("^(%S+) (%S+)$")
    if token then
      holds[#holds + 1] = { token, hold_id }
    end
  end
  f:close()
  n = thread_index or 0
  step = tonumber(args[2] or "1") or 1
  status_counts = {}
  sent = 0
  wrapped = 0
end

function request()
  local i = sent * step + n
  if i >= #holds then
    wrapped = wrapped + 1
  end
  local hold = holds[i % #holds + 1]
  sent = sent + 1
  return wrk.format("POST", "/api/v1/orders", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. hold[1],
    ["Idempotency-Key"] = hold[2],
  }, '{"hold_id":"' .. hold[2] .. '"}')
end

function response(status, headers, body)
  local key = tostring(status)
  status_counts[key] = (status_counts[key] or 0) + 1
end

function done(summary, latency, requests)
  local statuses = {}
  local wraps = 0
  for _, thread in ipairs(threads) do
    local counts = thread:get("status_counts")
    for k, v in pairs(counts) do
      statuses[k] = (statuses[k] or 0) + v
    end
    wraps = wraps + (thread:get("wrapped") or 0)
  end
  local parts = {}
  for k, v in pairs(statuses) do
    parts[#parts + 1] = string.format('"%s": %d', k, v)
  end
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, '
      .. '"write_errors": %d, "timeouts": %d, "non_2xx": %d, '
      .. '"p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, '
      .. '"wrapped": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, summary.errors.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, wraps, table.concat(parts, ", ")))
end
