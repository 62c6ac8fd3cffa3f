-- queue_admit.lua: one pacing pass - admit the next fans at the queue's rate.
--
-- Only the holder of the pacing lease admits (another admitter gets 'not_pacer'), and
-- the rate is a token bucket kept in the queue itself (credit grows rate/60000 per ms,
-- capped at one second's worth, at least 1), so no number of admitters admits faster.
-- At the first pass after the sale opened the queue turns 'open' and the seed is
-- revealed in the log. With no seats left the queue is 'sold_out' (no joins, no
-- admissions, credit dropped); when seats come back it resumes.
--
-- KEYS: the queue key set (lib/queue.lua, prepended by core/queue.py)
-- ARGV: admitter id, lease ms, seats left, most fans to admit in this pass, most fans
--       shopping at once (admitted within the admission window; 0 = no cap: the `auto`
--       rate lowers admissions below the rate while this many are still shopping)
-- Returns:
--   {'admitted', n, waiting, admitted total, pid1, pid2, ...}   n may be 0
--   {'not_open'}       before the sale opens
--   {'sold_out', waiting}
--   {'not_pacer'}      another admitter holds the lease
--   {'absent'}         the queue was never created
--
-- luacheck: globals KEYS ARGV redis
-- luacheck: read globals Q

local me, lease = ARGV[1], tonumber(ARGV[2])
local seats_left, max_batch = tonumber(ARGV[3]), tonumber(ARGV[4])
local max_shoppers = tonumber(ARGV[5] or '0')

local holder = redis.call('GET', Q.K.pacer)
if holder and holder ~= me then return {'not_pacer'} end
redis.call('SET', Q.K.pacer, me, 'PX', lease)

local m = redis.call('HMGET', Q.K.meta, 'state', 'opens', 'rate', 'credit', 'last', 'admitted',
  'seed')
if not m[1] then return {'absent'} end
local state, opens, rate = m[1], tonumber(m[2]), tonumber(m[3])
local credit, last, admitted = tonumber(m[4]), tonumber(m[5]), tonumber(m[6])
local now = Q.now_ms()
if now < opens then return {'not_open'} end

if state == 'pre' then
  state = 'open'
  last = opens
  redis.call('XADD', Q.K.log, '*', 'kind', 'open', 'at', now,
    'waiting', redis.call('ZCARD', Q.K.wait))
  redis.call('XADD', Q.K.log, '*', 'kind', 'reveal', 'at', now, 'seed', m[7])
end

if seats_left <= 0 then
  if state ~= 'sold_out' then
    redis.call('XADD', Q.K.log, '*', 'kind', 'sold_out', 'at', now,
      'waiting', redis.call('ZCARD', Q.K.wait))
  end
  redis.call('HSET', Q.K.meta, 'state', 'sold_out', 'credit', 0, 'last', now)
  return {'sold_out', redis.call('ZCARD', Q.K.wait)}
end
if state == 'sold_out' then
  state = 'open'
  last = now
  redis.call('XADD', Q.K.log, '*', 'kind', 'resume', 'at', now)
end

local cap = math.max(1, math.floor(rate / 60))
credit = math.min(cap, credit + (now - last) * rate / 60000)
local n = math.min(math.floor(credit), max_batch)
if max_shoppers > 0 then
  local window = tonumber(redis.call('HGET', Q.K.meta, 'window_ms'))
  local shopping = redis.call('ZCOUNT', Q.K.admitted, now - window, '+inf')
  n = math.max(0, math.min(n, max_shoppers - shopping))
end
local out = {'admitted', 0, 0, 0}
if n > 0 then
  local popped = redis.call('ZPOPMIN', Q.K.wait, n)
  for i = 1, #popped, 2 do
    local pid = popped[i]
    admitted = admitted + 1
    redis.call('ZADD', Q.K.admitted, now, pid)
    redis.call('XADD', Q.K.log, '*', 'kind', 'admit', 'at', now, 'pid', pid,
      'position', admitted)
    out[#out + 1] = pid
  end
  credit = credit - (#popped / 2)
end
out[2] = #out - 4
redis.call('HSET', Q.K.meta, 'state', state, 'credit', tostring(credit), 'last', now,
  'admitted', admitted)
out[3] = redis.call('ZCARD', Q.K.wait)
out[4] = admitted
return out
