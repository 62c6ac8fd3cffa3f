-- 0020_payments: the money side of the saga. See docs/decisions/1101-payments-saga.md.
--
-- payments.payments: one row per payment of a hold (POST /api/v1/payments), written by
-- the API (create, webhook) and the payments worker (expiry, compensations).
-- payments.refunds: one row per refund; the tickets it covers are revoked and marked
-- refunded in the same transaction that writes it, the seats go back to sale in Redis
-- after the commit (seats_returned), the money through the provider (status).
-- simpay.*: the simulated provider's own books (dev and tests only).

CREATE SCHEMA payments;

CREATE TABLE payments.payments (
    payment_id     uuid PRIMARY KEY,
    buyer          text NOT NULL,
    hold_id        text NOT NULL,
    event_id       bigint NOT NULL REFERENCES catalog.events (id),
    amount_minor   bigint NOT NULL CHECK (amount_minor > 0),
    currency       char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    provider       text NOT NULL CHECK (provider IN ('simulated', 'stripe')),
    provider_ref   text UNIQUE,
    checkout_url   text,
    client_secret  text,
    status         text NOT NULL DEFAULT 'pending' CHECK (status IN
                       ('pending', 'declined', 'expired', 'captured', 'refunding', 'refunded')),
    -- Why a capture was refunded, or a payment declined/expired.
    reason         text,
    -- The order the capture placed (core.payments.order_key_for is its idempotency key).
    order_id       uuid,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    captured_at    timestamptz
);

CREATE INDEX payments_by_buyer ON payments.payments (buyer, created_at DESC);
CREATE INDEX payments_pending ON payments.payments (created_at) WHERE status = 'pending';
CREATE INDEX payments_by_order ON payments.payments (order_id) WHERE order_id IS NOT NULL;

-- Provider notifications already handled: a duplicate webhook does nothing twice.
CREATE TABLE payments.webhook_events (
    provider    text NOT NULL,
    event_ref   text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, event_ref)
);

CREATE TABLE payments.refunds (
    refund_id       uuid PRIMARY KEY,
    -- Null for the refund of a capture that never became an order (kind 'unplaced').
    order_id        uuid REFERENCES orders.orders (order_id),
    payment_id      uuid REFERENCES payments.payments (payment_id),
    event_id        bigint NOT NULL,
    kind            text NOT NULL CHECK (kind IN
                        ('buyer_cancel', 'organizer', 'event_cancelled', 'unplaced', 'rejected')),
    ticket_ids      uuid[] NOT NULL DEFAULT '{}',
    amount_minor    bigint NOT NULL CHECK (amount_minor >= 0),
    currency        char(3) NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status          text NOT NULL DEFAULT 'requested'
                        CHECK (status IN ('requested', 'refunded', 'failed')),
    -- The seats of ticket_ids are free again in Redis (lua/refund.lua ran).
    seats_returned  boolean NOT NULL DEFAULT false,
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    provider_ref    text,
    reason          text,
    actor           text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    refunded_at     timestamptz,
    CHECK ((status = 'refunded') = (refunded_at IS NOT NULL))
);

CREATE INDEX refunds_by_order ON payments.refunds (order_id);
CREATE INDEX refunds_due ON payments.refunds (next_attempt_at)
    WHERE status <> 'refunded' OR NOT seats_returned;

-- A refunded ticket gives its seat back: it no longer counts as the seat's sale, so the
-- one-ticket-per-seat rule holds over the tickets that are not refunded.
ALTER TABLE orders.tickets ADD COLUMN refunded_at timestamptz;
ALTER TABLE orders.tickets ADD CONSTRAINT tickets_refunded_are_revoked
    CHECK (refunded_at IS NULL OR revoked_at IS NOT NULL);
ALTER TABLE orders.tickets DROP CONSTRAINT tickets_one_per_seat;
CREATE UNIQUE INDEX tickets_one_per_seat ON orders.tickets (event_id, seat_id)
    WHERE refunded_at IS NULL;
CREATE INDEX tickets_by_event_seat ON orders.tickets (event_id, seat_id);

-- Per event: a buyer may cancel until this many hours before it starts (null: the
-- deployment's default, TB_PAYMENTS_SELF_CANCEL_HOURS).
ALTER TABLE catalog.events ADD COLUMN refund_window_hours integer
    CHECK (refund_window_hours IS NULL OR refund_window_hours BETWEEN 0 AND 8760);

-- The simulated provider (api/payments/simulator.py).
CREATE SCHEMA simpay;

CREATE TABLE simpay.intents (
    intent       text PRIMARY KEY,
    payment_id   text NOT NULL UNIQUE,
    amount       bigint NOT NULL,
    currency     char(3) NOT NULL,
    description  text NOT NULL DEFAULT '',
    status       text NOT NULL DEFAULT 'created'
                     CHECK (status IN ('created', 'succeeded', 'failed')),
    mode         text,
    refunded     bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE simpay.refunds (
    refund           text PRIMARY KEY,
    intent           text NOT NULL REFERENCES simpay.intents (intent),
    idempotency_key  text NOT NULL UNIQUE,
    amount           bigint NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE simpay.callbacks (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_ref     text NOT NULL,
    intent        text NOT NULL REFERENCES simpay.intents (intent),
    body          bytea NOT NULL,
    url           text NOT NULL,
    due_at        timestamptz NOT NULL,
    attempts      integer NOT NULL DEFAULT 0,
    delivered_at  timestamptz,
    last_status   integer
);

CREATE INDEX callbacks_due ON simpay.callbacks (due_at) WHERE delivered_at IS NULL;
