-- order_pending.lua: record an order as pending for its buyer until the persister decides.
--
-- GET /orders/{id} and /me/orders answer from this record before PostgreSQL has the
-- order; the reconciler re-publishes an order from it if OrderPlaced never landed.
--
-- KEYS: [1] the buyer's pending orders ({user:<sub>}:orders, hash order_id -> JSON)
-- ARGV: [1] the order id, [2] the OrderPlaced JSON, [3] the hash's TTL in seconds
-- Returns: 1
-- luacheck: globals KEYS ARGV redis

redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return 1
