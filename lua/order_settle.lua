-- order_settle.lua: settle an Idempotency-Key claim only if it is still this request's.
--
-- A claim is the JSON value of KEYS[1] with a "token" member, set by the request that
-- won the claim (order_claim.lua). A request whose lease ran out may have been replaced
-- by a retry: it must then neither delete nor overwrite the retry's claim.
--
-- KEYS: [1] the claim ({user:<sub>}:idem:<digest>)
-- ARGV: [1] the settling request's token, [2] the new value (the stored answer), or ''
--       to delete the claim, [3] TTL of the new value, seconds
-- Returns: 1 when settled, 0 when the claim belongs to someone else (nothing changed).
--          A missing claim (the lease expired, nobody took it) is written when ARGV[2]
--          is set.
-- luacheck: globals KEYS ARGV redis cjson

local current = redis.call('GET', KEYS[1])
if not current then
  if ARGV[2] == '' then
    return 0
  end
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
  return 1
end
local ok, claim = pcall(cjson.decode, current)
if not ok or type(claim) ~= 'table' or claim.token ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
end
return 1
