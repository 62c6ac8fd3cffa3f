-- 0019_partner_customers: a partner's reference for the end customer of each of its
-- orders. See docs/decisions/1056-partner-customer-reference.md.
--
-- Keyed by order id without a foreign key: the partner may label an order while it is
-- still pending (its row is written by the persister later).
CREATE TABLE orders.order_customers (
    order_id      uuid PRIMARY KEY,
    partner       text NOT NULL,
    customer_ref  text NOT NULL CHECK (length(customer_ref) BETWEEN 1 AND 100),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX order_customers_by_ref ON orders.order_customers (partner, customer_ref);
