-- 0001_catalog: the catalog — categories, venues, events, price categories and each
-- event's seat map (sections -> rows -> seats). See docs/decisions/0201-*.md.
--
-- The seat map belongs to the event (not the venue): one venue is set up differently per
-- show (a 5,000-seat festival and a 45,000-seat concert in the same stadium), each seat's
-- price category is per event, and orders.tickets can reference (event_id, seat_id).

-- Trigram indexes make ILIKE '%text%' searches on titles and venue names use an index;
-- unaccent lets "opera" find "Ópera". Both are trusted extensions (no superuser needed).
CREATE EXTENSION IF NOT EXISTS pg_trgm WITH SCHEMA public;
CREATE EXTENSION IF NOT EXISTS unaccent WITH SCHEMA public;

CREATE SCHEMA catalog;

-- unaccent() is only STABLE (its dictionary could change); this wrapper pins the
-- dictionary so it can feed generated columns and indexes.
CREATE FUNCTION catalog.search_key(value text) RETURNS text
    LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT
    RETURN lower(public.unaccent('public.unaccent'::regdictionary, value));

-- Event categories (reference data, served by GET /api/v1/categories).
CREATE TABLE catalog.categories (
    code      text PRIMARY KEY CHECK (code ~ '^[A-Z][A-Z_]{1,31}$'),
    name      text NOT NULL,
    position  smallint NOT NULL UNIQUE
);

INSERT INTO catalog.categories (code, name, position) VALUES
    ('CONCERT', 'Concerts', 1),
    ('SPORTS', 'Sports', 2),
    ('FESTIVAL', 'Festivals', 3),
    ('THEATER', 'Theater', 4),
    ('CONFERENCE', 'Conferences', 5),
    ('OTHER', 'Other', 6);

CREATE TABLE catalog.venues (
    id       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name     text NOT NULL UNIQUE CHECK (length(name) BETWEEN 1 AND 200),
    address  text NOT NULL,
    search   text GENERATED ALWAYS AS (catalog.search_key(name)) STORED
);

CREATE INDEX venues_search_trgm ON catalog.venues USING gin (search public.gin_trgm_ops);

-- status: 'draft' is invisible to buyers; 'published' is listed (on sale between
-- sale_opens_at and sale_closes_at); 'cancelled' stays readable by id but is not listed.
CREATE TABLE catalog.events (
    id                bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slug              text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    title             text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    category          text NOT NULL REFERENCES catalog.categories (code),
    venue_id          bigint NOT NULL REFERENCES catalog.venues (id),
    starts_at         timestamptz NOT NULL,
    sale_opens_at     timestamptz NOT NULL,
    sale_closes_at    timestamptz NOT NULL,
    status            text NOT NULL DEFAULT 'draft'
                      CHECK (status IN ('draft', 'published', 'cancelled')),
    capacity          integer NOT NULL CHECK (capacity > 0),
    base_price_minor  bigint NOT NULL CHECK (base_price_minor > 0),
    currency          char(3) NOT NULL DEFAULT 'PEN' CHECK (currency ~ '^[A-Z]{3}$'),
    -- Redis inventory partitions ({ev:<id>:<partition>}); sections map to one each.
    partitions        smallint NOT NULL DEFAULT 1 CHECK (partitions BETWEEN 1 AND 64),
    created_at        timestamptz NOT NULL DEFAULT now(),
    search            text GENERATED ALWAYS AS (catalog.search_key(title)) STORED,
    CHECK (sale_opens_at < sale_closes_at),
    CHECK (sale_closes_at <= starts_at)
);

-- Keyset pagination is ORDER BY (starts_at, id); the list always filters on status.
CREATE INDEX events_listing ON catalog.events (status, starts_at, id);
CREATE INDEX events_listing_by_category ON catalog.events (status, category, starts_at, id);
CREATE INDEX events_venue ON catalog.events (venue_id);
CREATE INDEX events_search_trgm ON catalog.events USING gin (search public.gin_trgm_ops);

-- Price categories of one event (VIP, PLATINUM, GENERAL...), derived from its base price.
CREATE TABLE catalog.price_categories (
    event_id     bigint NOT NULL REFERENCES catalog.events (id) ON DELETE CASCADE,
    code         text NOT NULL CHECK (code ~ '^[A-Z][A-Z0-9_]{0,15}$'),
    name         text NOT NULL,
    price_minor  bigint NOT NULL CHECK (price_minor >= 0),
    currency     char(3) NOT NULL DEFAULT 'PEN' CHECK (currency ~ '^[A-Z]{3}$'),
    position     smallint NOT NULL,
    PRIMARY KEY (event_id, code)
);

CREATE TABLE catalog.sections (
    event_id   bigint NOT NULL REFERENCES catalog.events (id) ON DELETE CASCADE,
    code       text NOT NULL CHECK (code ~ '^[A-Za-z0-9]{1,8}$'),
    name       text NOT NULL,
    position   integer NOT NULL,
    partition  smallint NOT NULL DEFAULT 0 CHECK (partition >= 0),
    PRIMARY KEY (event_id, code)
);

CREATE TABLE catalog.rows (
    event_id  bigint NOT NULL,
    section   text NOT NULL,
    label     text NOT NULL CHECK (label ~ '^[A-Za-z0-9]{1,4}$'),
    position  integer NOT NULL,
    PRIMARY KEY (event_id, section, label),
    FOREIGN KEY (event_id, section) REFERENCES catalog.sections (event_id, code) ON DELETE CASCADE
);

-- One row per seat. seat_id is the wire id "<section>-<row>-<number>" (e.g. "101-C-14"),
-- generated so it can never disagree with its parts.
CREATE TABLE catalog.seats (
    event_id   bigint NOT NULL,
    section    text NOT NULL,
    row_label  text NOT NULL,
    number     smallint NOT NULL CHECK (number BETWEEN 1 AND 9999),
    category   text NOT NULL,
    seat_id    text GENERATED ALWAYS AS (section || '-' || row_label || '-' || number::text) STORED,
    PRIMARY KEY (event_id, seat_id),
    FOREIGN KEY (event_id, section, row_label)
        REFERENCES catalog.rows (event_id, section, label) ON DELETE CASCADE,
    FOREIGN KEY (event_id, category)
        REFERENCES catalog.price_categories (event_id, code) ON DELETE CASCADE
);
