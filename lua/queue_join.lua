-- queue_join.lua: a fan joins the event's waiting room, once per account.
--
-- Idempotent: a fan already waiting or admitted gets their place back (no new entry,
-- nothing counted against the address). A new fan counts against the address's join
-- limit, then gets a score: before the sale opens, a 52-bit hash of (seed, pid) - the
-- random draw, fixed by the committed seed; after it, 2^52 + their arrival number.
-- The join is appended to the fairness log stream.
--
-- KEYS: the queue key set (lib/queue.lua, prepended by core/queue.py)
-- ARGV: pid, ip bucket, then the queue's settings for its creation: seed, commitment,
--       queue opens ms, sale opens ms, sale closes ms, rate per min, joins per ip,
--       admission window ms
-- Returns:
--   the place (lib/queue.lua Q.place): {'waiting', rank, admitted, pre, waiting} or
--   {'admitted', admitted_ms, window_ms}
--   {'not_open', queue_opens_ms}   before the queue opens
--   {'closed'}                     the sale is over
--   {'sold_out'}                   sold out: nobody new joins (waiting fans stay)
--   {'ip_limit', joins}            the address used up its joins
--
-- luacheck: globals KEYS ARGV redis
-- luacheck: read globals Q

local pid, ip = ARGV[1], ARGV[2]
local cfg = {ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]}
local now = Q.now_ms()
Q.init(cfg, now)

local place = Q.place(pid)
if place then return place end

local m = redis.call('HMGET', Q.K.meta, 'qopens', 'opens', 'closes', 'per_ip', 'state', 'seed')
local qopens, opens, closes = tonumber(m[1]), tonumber(m[2]), tonumber(m[3])
if now < qopens then return {'not_open', qopens} end
if now >= closes then return {'closed'} end
if m[5] == 'sold_out' then return {'sold_out'} end

local per_ip = tonumber(m[4])
if per_ip > 0 then
  local used = tonumber(redis.call('HGET', Q.K.ips, ip) or '0')
  if used >= per_ip then return {'ip_limit', used} end
  redis.call('HINCRBY', Q.K.ips, ip, 1)
end

local pre = 0
local score
-- The draw happens at the opening: the meta state turns 'open' with the first admission
-- pass after it, but a join is late as soon as the sale opened.
if now < opens and m[5] == 'pre' then
  pre = 1
  score = tonumber(string.sub(redis.sha1hex(m[6] .. pid), 1, 13), 16)
else
  score = Q.FIFO_BASE + redis.call('HINCRBY', Q.K.meta, 'seq', 1)
end
redis.call('ZADD', Q.K.wait, score, pid)
redis.call('XADD', Q.K.log, '*', 'kind', 'join', 'at', now, 'pid', pid, 'pre', pre)
return Q.place(pid)
