-- 0003_idempotency_order_index: index orders.idempotency_keys by order_id.
--
-- The foreign key idempotency_keys.order_id -> orders.orders had no index, so deleting
-- an order (or any lookup by order) scanned the whole idempotency_keys table per order.
-- Plain CREATE INDEX (not CONCURRENTLY): the runner applies each file in a transaction.
CREATE INDEX IF NOT EXISTS idempotency_keys_by_order ON orders.idempotency_keys (order_id);
