-- queue.lua: shared helpers for the waiting-room scripts (lua/queue_*.lua).
--
-- core/queue.py prepends this file to each queue script before loading it. Every queue
-- script receives the same KEYS, all in the event's first partition's slot
-- {ev:<event_id>:0}, built in Python (core/queue.py KEY_NAMES):
--   KEYS[1]  meta      hash  seed, commit, opens (sale opens, ms), qopens (queue opens, ms),
--                            closes, rate (fans/min), per_ip, window_ms, state
--                            (pre|open|sold_out), seq (late joins so far), admitted,
--                            credit, last (ms of the last admission pass)
--   KEYS[2]  wait      zset  pid -> score: pre-queue fans a 52-bit hash of (seed, pid),
--                            later fans 2^52 + arrival number (FIFO behind them)
--   KEYS[3]  admitted  zset  pid -> admitted_ms
--   KEYS[4]  ips       hash  ip bucket -> joins
--   KEYS[5]  log       stream of fairness-log entries (copied to PostgreSQL, then trimmed)
--   KEYS[6]  pacer     string: the admitter holding the pacing lease
--
-- luacheck: globals KEYS ARGV redis

local Q = {}

Q.K = {
  meta = KEYS[1], wait = KEYS[2], admitted = KEYS[3], ips = KEYS[4], log = KEYS[5],
  pacer = KEYS[6],
}

Q.FIFO_BASE = 4503599627370496  -- 2^52

function Q.now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Create the queue from its settings the first time any script sees it; the seed's
-- commitment opens the fairness log. Later calls leave the stored settings alone.
-- cfg = {seed, commit, qopens, opens, closes, rate, per_ip, window_ms}
function Q.init(cfg, now)
  if redis.call('EXISTS', Q.K.meta) == 1 then return end
  redis.call('HSET', Q.K.meta, 'seed', cfg[1], 'commit', cfg[2], 'qopens', cfg[3],
    'opens', cfg[4], 'closes', cfg[5], 'rate', cfg[6], 'per_ip', cfg[7],
    'window_ms', cfg[8], 'state', 'pre', 'seq', 0, 'admitted', 0, 'credit', 0, 'last', 0)
  redis.call('XADD', Q.K.log, '*', 'kind', 'commit', 'at', now, 'commitment', cfg[2],
    'rate', cfg[6], 'opens', cfg[4])
end

-- The fan's place: {'waiting', rank (0-based), admitted so far, pre (1|0), waiting},
-- {'admitted', admitted_ms, window_ms} or nil when not in the queue.
function Q.place(pid)
  local at = redis.call('ZSCORE', Q.K.admitted, pid)
  if at then
    return {'admitted', tonumber(at), tonumber(redis.call('HGET', Q.K.meta, 'window_ms'))}
  end
  local score = redis.call('ZSCORE', Q.K.wait, pid)
  if not score then return nil end
  local pre = 0
  if tonumber(score) < Q.FIFO_BASE then pre = 1 end
  return {'waiting', redis.call('ZRANK', Q.K.wait, pid),
    tonumber(redis.call('HGET', Q.K.meta, 'admitted')), pre, redis.call('ZCARD', Q.K.wait)}
end
