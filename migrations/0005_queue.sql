-- 0005_queue: waiting rooms of queued on-sales and their fairness logs.
-- See docs/decisions/1001-waiting-room.md.
--
-- An event with a row in queue.settings is queued: fans join from queue_opens_at, are
-- admitted at rate_per_min from the event's sale_opens_at, and holds and orders need an
-- admission token. The seed fixes the pre-queue draw; only its commitment (SHA-256 of the
-- seed's hex text) is public before the sale opens.

CREATE SCHEMA queue;

CREATE TABLE queue.settings (
    event_id            bigint PRIMARY KEY REFERENCES catalog.events (id) ON DELETE CASCADE,
    queue_opens_at      timestamptz NOT NULL,
    rate_per_min        integer NOT NULL CHECK (rate_per_min BETWEEN 1 AND 1000000),
    -- auto: rate_per_min is the ceiling, and fewer fans are let in while the ones already
    -- shopping could take every seat left (workers/admitter.py shoppers_cap).
    rate_auto           boolean NOT NULL DEFAULT false,
    admission_window_s  integer NOT NULL DEFAULT 900 CHECK (admission_window_s BETWEEN 60 AND 7200),
    joins_per_ip        integer NOT NULL DEFAULT 20 CHECK (joins_per_ip >= 0),
    seed                text NOT NULL CHECK (seed ~ '^[0-9a-f]{64}$'),
    seed_commitment     text NOT NULL CHECK (seed_commitment ~ '^[0-9a-f]{64}$'),
    -- The last entry of the queue's Redis log stream copied into fairness_log, and of each
    -- partition's seat-delta stream (holds and sales): {"<partition>": "<stream id>"}.
    log_cursor          text NOT NULL DEFAULT '0-0',
    delta_cursors       jsonb NOT NULL DEFAULT '{}'::jsonb
);

-- Append-only and hash-chained: hash = sha256(prev || body), body = the entry's canonical
-- JSON (core/queue.py entry_body), stored as text so the hashed bytes are kept exactly.
CREATE TABLE queue.fairness_log (
    event_id  bigint NOT NULL REFERENCES queue.settings (event_id) ON DELETE CASCADE,
    seq       bigint NOT NULL CHECK (seq > 0),
    body      text NOT NULL,
    prev      text NOT NULL,
    hash      text NOT NULL,
    PRIMARY KEY (event_id, seq)
);

CREATE FUNCTION queue.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'queue.fairness_log is append-only';
END;
$$;

CREATE TRIGGER fairness_log_append_only
    BEFORE UPDATE OR DELETE ON queue.fairness_log
    FOR EACH ROW EXECUTE FUNCTION queue.refuse_change();
