-- 0018_support: the support agents' audit log, and ticket generations for reissues.
-- See docs/decisions/1054-support-tools.md.

-- Every support action (resend, revoke, reissue, manual admit): who, when, what, why.
CREATE TABLE orders.audit_log (
    audit_id   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor      text NOT NULL,
    action     text NOT NULL CHECK (action IN ('resend', 'revoke', 'reissue', 'manual_admit')),
    order_id   uuid,
    ticket_id  uuid,
    reason     text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    details    jsonb NOT NULL DEFAULT '{}'
);

CREATE INDEX audit_by_order ON orders.audit_log (order_id, audit_id) WHERE order_id IS NOT NULL;
CREATE INDEX audit_by_ticket ON orders.audit_log (ticket_id, audit_id) WHERE ticket_id IS NOT NULL;

-- A reissued ticket keeps its id and seat and gets a new token of the next generation;
-- only the token of the current generation is admitted (core/gate.py).
ALTER TABLE orders.tickets ADD COLUMN generation integer NOT NULL DEFAULT 0
    CHECK (generation >= 0);
ALTER TABLE orders.tickets ADD COLUMN reissued_at timestamptz;
CREATE INDEX tickets_reissued_by_event ON orders.tickets (event_id, reissued_at)
    WHERE reissued_at IS NOT NULL;
