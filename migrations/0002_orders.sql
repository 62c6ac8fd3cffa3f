-- 0002_orders: orders, tickets, idempotency keys and check-ins. See
-- docs/decisions/0401-purchase-saga.md and 0402-persister-batches.md.
--
-- Written only by the persister (orders, tickets, idempotency keys, in one transaction
-- per Kafka batch), the ticket issuer (token columns) and the check-in endpoint.
-- A pending order lives in Redis and Kafka until the persister decides it; a row here
-- is always confirmed or rejected. Money is integer minor units plus an ISO currency.

CREATE SCHEMA orders;

CREATE TABLE orders.orders (
    order_id           uuid PRIMARY KEY,
    event_id           bigint NOT NULL REFERENCES catalog.events (id),
    partition          smallint NOT NULL DEFAULT 0 CHECK (partition >= 0),
    hold_id            text NOT NULL,
    buyer              text NOT NULL,
    status             text NOT NULL CHECK (status IN ('pending', 'confirmed', 'rejected')),
    reason             text CHECK (reason IN ('seat_taken', 'invalid_order', 'hold_expired')),
    -- The seats that were already sold when an order was rejected (for the buyer).
    conflicting_seats  text[] NOT NULL DEFAULT '{}',
    -- The order as placed: [{"seat_id", "category", "price"}...], prices from the catalog.
    seats              jsonb NOT NULL,
    total_minor        bigint NOT NULL CHECK (total_minor >= 0),
    currency           char(3) NOT NULL DEFAULT 'PEN' CHECK (currency ~ '^[A-Z]{3}$'),
    placed_at          timestamptz NOT NULL,
    decided_at         timestamptz NOT NULL DEFAULT now(),
    CHECK ((status = 'rejected') = (reason IS NOT NULL))
);

-- GET /api/v1/me/orders: newest first, keyset on (placed_at, order_id).
CREATE INDEX orders_by_buyer ON orders.orders (buyer, placed_at DESC, order_id);
CREATE INDEX orders_by_event ON orders.orders (event_id, status);

-- One row per sold seat. UNIQUE (event_id, seat_id) is the final arbiter against a
-- double sale, whatever Redis says after a failover. ticket_id is a UUIDv5 of
-- (order_id, seat_id) (core.orders.ticket_id_for), so a redelivered order maps to the
-- same ticket rows.
CREATE TABLE orders.tickets (
    ticket_id    uuid PRIMARY KEY,
    order_id     uuid NOT NULL REFERENCES orders.orders (order_id),
    event_id     bigint NOT NULL,
    seat_id      text NOT NULL,
    holder       text NOT NULL,
    category     text NOT NULL,
    price_minor  bigint NOT NULL CHECK (price_minor >= 0),
    currency     char(3) NOT NULL DEFAULT 'PEN' CHECK (currency ~ '^[A-Z]{3}$'),
    -- Set by the ticket issuer: the signed token (compact JWS) and its key id.
    token        text,
    kid          text,
    issued_at    timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tickets_one_per_seat UNIQUE (event_id, seat_id),
    FOREIGN KEY (event_id, seat_id) REFERENCES catalog.seats (event_id, seat_id),
    CHECK ((token IS NULL) = (issued_at IS NULL))
);

CREATE INDEX tickets_by_order ON orders.tickets (order_id);
CREATE INDEX tickets_by_holder ON orders.tickets (holder, created_at DESC, ticket_id);

-- Durable copy of POST /api/v1/orders idempotency keys (the hot copy is in Redis with a
-- TTL): a retried request with the same key finds its order even after Redis forgot it.
CREATE TABLE orders.idempotency_keys (
    buyer        text NOT NULL,
    key          text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    fingerprint  text NOT NULL,
    order_id     uuid NOT NULL REFERENCES orders.orders (order_id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (buyer, key)
);

-- One admission per ticket: the first INSERT wins, every later scan sees its time.
CREATE TABLE orders.checkins (
    ticket_id      uuid PRIMARY KEY REFERENCES orders.tickets (ticket_id),
    checked_in_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    scanner        text NOT NULL
);
