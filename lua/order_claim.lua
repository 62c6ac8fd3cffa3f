-- order_claim.lua: claim an Idempotency-Key for an order request, in one round trip.
--
-- The claim key and the buyer's pending orders share the buyer's hash slot
-- ({user:<sub>}), so one script answers both questions a new request asks: is another
-- request with this key running or done, and did an earlier attempt of this request
-- record its order before it died?
--
-- KEYS: [1] the claim ({user:<sub>}:idem:<digest>), [2] the buyer's pending orders
--       ({user:<sub>}:orders, hash order_id -> OrderPlaced JSON)
-- ARGV: [1] the claim's JSON value ({fp, state: "in_progress", token}), [2] its lease in
--       seconds, [3] the order id this request names (derived from buyer and key)
-- Returns: {1, pending} when the key is now this request's; pending is the OrderPlaced
--          JSON an earlier attempt recorded under the order id, or false.
--          {0, current} when the key is taken: current is the claim's JSON (in progress,
--          or done with the stored answer); the caller checks its fingerprint.
-- luacheck: globals KEYS ARGV redis

local current = redis.call('GET', KEYS[1])
if current then
  return {0, current}
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return {1, redis.call('HGET', KEYS[2], ARGV[3])}
