-- 0017_delivery: where each buyer's tickets are e-mailed, and every delivery sent.
-- See docs/decisions/1053-ticket-delivery.md.

-- PUT /api/v1/me/contact: one address and language per buyer (the token's subject).
CREATE TABLE orders.contacts (
    buyer       text PRIMARY KEY,
    email       text NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    lang        text NOT NULL DEFAULT 'es' CHECK (lang IN ('es', 'en')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per delivery request (the order id for the confirmation, a fresh id for each
-- resend): the mailer skips a request that already has a row, so a redelivered message
-- does not e-mail twice.
CREATE TABLE orders.deliveries (
    request_id    text PRIMARY KEY CHECK (length(request_id) BETWEEN 1 AND 100),
    order_id      uuid NOT NULL REFERENCES orders.orders (order_id),
    kind          text NOT NULL CHECK (kind IN ('confirmation', 'resend')),
    requested_by  text NOT NULL,
    -- sent: handed to the SMTP server; no_address: the buyer gave none.
    status        text NOT NULL CHECK (status IN ('sent', 'no_address')),
    recipient     text,
    lang          text,
    message_id    text,
    sent_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX deliveries_by_order ON orders.deliveries (order_id, sent_at);
