-- 0004_organizer: organizations (tenants), venue seat maps, the event lifecycle, seat
-- accessibility flags, refunds due on cancellation and the organizer audit log.
-- See docs/decisions/0901-organizations-and-roles.md, 0902-venue-seat-maps.md and
-- 0903-event-lifecycle.md.

-- An organization owns venues and events. The role "organizer" with an organization
-- claim manages only its own; "admin" manages all. Everything that existed before
-- belongs to the organization 'default'.
CREATE TABLE catalog.organizations (
    code        text PRIMARY KEY CHECK (code ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND length(code) <= 64),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    created_at  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO catalog.organizations (code, name) VALUES ('default', 'Default organization');

ALTER TABLE catalog.venues
    ADD COLUMN organization text NOT NULL DEFAULT 'default'
        REFERENCES catalog.organizations (code),
    -- Optimistic concurrency: every edit bumps it; the API's ETag is derived from it.
    ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version > 0);

CREATE INDEX venues_by_organization ON catalog.venues (organization, id);

-- A venue's seat map: the template events are created on (each event copies it into
-- catalog.sections/rows/seats, decision 0201). The document is core.venues.SeatMapDoc.
CREATE TABLE catalog.venue_seat_maps (
    venue_id    bigint PRIMARY KEY REFERENCES catalog.venues (id) ON DELETE CASCADE,
    layout      jsonb NOT NULL,
    seats       integer NOT NULL CHECK (seats > 0),
    version     integer NOT NULL DEFAULT 1 CHECK (version > 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- The lifecycle: draft -> published (inventory loaded; on sale inside the sale window)
-- -> paused <-> published -> closed, or cancelled from any state but closed.
ALTER TABLE catalog.events DROP CONSTRAINT events_status_check;
ALTER TABLE catalog.events
    ADD CONSTRAINT events_status_check
        CHECK (status IN ('draft', 'published', 'paused', 'closed', 'cancelled')),
    ADD COLUMN organization text NOT NULL DEFAULT 'default'
        REFERENCES catalog.organizations (code),
    ADD COLUMN version integer NOT NULL DEFAULT 1 CHECK (version > 0),
    -- Per-event rules (NULL: the API's defaults, TB_HOLD_*).
    ADD COLUMN buyer_limit smallint CHECK (buyer_limit BETWEEN 1 AND 100),
    ADD COLUMN hold_ttl_s integer CHECK (hold_ttl_s BETWEEN 30 AND 3600),
    -- The venue map version the event's seats were copied from (NULL: not from a venue
    -- map, e.g. the seed). Sold seats of such events keep the venue map from losing them.
    ADD COLUMN venue_map_version integer,
    ADD COLUMN published_at timestamptz,
    ADD COLUMN cancelled_at timestamptz;

CREATE INDEX events_by_organization ON catalog.events (organization, id);

-- Accessibility: wheelchair spaces and the companion seats beside them.
ALTER TABLE catalog.seats
    ADD COLUMN wheelchair boolean NOT NULL DEFAULT false,
    ADD COLUMN companion boolean NOT NULL DEFAULT false;

-- A cancelled event's confirmed orders are due a refund (the payments domain pays it).
ALTER TABLE orders.orders
    ADD COLUMN refund text CHECK (refund IN ('due', 'refunded'));

CREATE INDEX orders_refund_due ON orders.orders (event_id) WHERE refund = 'due';

-- An order the persister confirms after its event was cancelled (it was pending in Kafka
-- at the time) is marked for refund as it is written, so no confirmed order of a
-- cancelled event is ever left without one.
CREATE FUNCTION orders.mark_refund_when_cancelled() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'confirmed' AND NEW.refund IS NULL AND EXISTS (
        SELECT 1 FROM catalog.events e WHERE e.id = NEW.event_id AND e.status = 'cancelled'
    ) THEN
        NEW.refund := 'due';
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER orders_refund_when_cancelled
    BEFORE INSERT OR UPDATE OF status ON orders.orders
    FOR EACH ROW EXECUTE FUNCTION orders.mark_refund_when_cancelled();

-- Every organizer and admin action: who, what, when, and the resource before and after.
CREATE TABLE catalog.audit_log (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at            timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor         text NOT NULL,
    roles         text[] NOT NULL,
    organization  text NOT NULL REFERENCES catalog.organizations (code),
    action        text NOT NULL,
    resource      text NOT NULL,   -- "venue:12", "event:40", "organization:acme"
    before        jsonb,
    after         jsonb
);

CREATE INDEX audit_by_organization ON catalog.audit_log (organization, id DESC);
CREATE INDEX audit_by_resource ON catalog.audit_log (resource, id DESC);
