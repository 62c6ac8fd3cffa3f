-- 0016_gate: the gate's scan log, the gate of each admission, and revoked tickets.
-- See docs/decisions/1051-gate-sessions-and-scan-log.md.
--
-- A scanner session is bound to one event and one gate name; every scan (admitted or
-- refused, online or synced from a device that was offline) is one row of orders.scans.
-- orders.checkins stays the arbiter of "admitted once"; its gate says where.

ALTER TABLE orders.checkins
    ADD COLUMN gate text NOT NULL DEFAULT '',
    -- A support agent's manual admission carries its reason; a scan has none.
    ADD COLUMN manual_reason text;

-- A revoked ticket (refunded, reissued, or revoked by support) is refused at the gate.
ALTER TABLE orders.tickets ADD COLUMN revoked_at timestamptz;
CREATE INDEX tickets_revoked_by_event ON orders.tickets (event_id, revoked_at)
    WHERE revoked_at IS NOT NULL;

CREATE INDEX checkins_by_time ON orders.checkins (checked_in_at);

CREATE TABLE orders.scans (
    scan_id     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- The event the scanner session is bound to (not necessarily the ticket's).
    event_id    bigint NOT NULL,
    gate        text NOT NULL CHECK (length(gate) BETWEEN 1 AND 40),
    scanner     text NOT NULL,
    -- Null when the code did not verify (we do not know which ticket it claims to be).
    ticket_id   uuid,
    seat_id     text,
    result      text NOT NULL CHECK (result ~ '^[a-z_]{1,40}$'),
    scanned_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- When the device scanned it, for a scan queued offline and sent later.
    device_at   timestamptz
);

CREATE INDEX scans_by_event ON orders.scans (event_id, scan_id);
CREATE INDEX scans_by_event_gate ON orders.scans (event_id, gate, scan_id);
