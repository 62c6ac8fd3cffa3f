-- 0021_refund_events: refunds are published and e-mailed.
--
-- Refunds are told: each refund state (requested, refunded, failed) is published once to
-- the notifications topic as a ``refund.status`` message (core/payments.py RefundChanged),
-- from an outbox the payments worker drains, and the mailer e-mails the buyer when the
-- money went back (docs/decisions/1101-payments-saga.md).

-- The last status published for this refund; the worker publishes while it differs.
ALTER TABLE payments.refunds ADD COLUMN published_status text;
CREATE INDEX refunds_unpublished ON payments.refunds (created_at)
    WHERE published_status IS DISTINCT FROM status;

-- A refund e-mail is a delivery too (request id ``refund:<refund_id>``).
ALTER TABLE orders.deliveries DROP CONSTRAINT deliveries_kind_check;
ALTER TABLE orders.deliveries ADD CONSTRAINT deliveries_kind_check
    CHECK (kind IN ('confirmation', 'resend', 'refund'));
