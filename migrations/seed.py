"""Seed the demo catalog from ``migrations/data/seed_events.csv`` and load its inventory.

``python -m migrations seed`` (after ``up``) writes the CSV's 20 events — venue, category,
base price, capacity — with price categories derived from the base price and a generated
seat map of exactly ``capacity`` seats (``core.events.plan_seat_map``), then loads each
event's inventory into Redis through ``core.inventory.Inventory.load``.

- Dates move into the future, keeping their order and gaps: every date shifts by the same
  whole number of days so the earliest event is ``LEAD_DAYS`` from today (Lima time);
  times of day stay as in the CSV (America/Lima).
- Idempotent: an event is keyed by its slug; one that exists is left alone (same id,
  same dates, same seats), and its Redis inventory is not reloaded when it is there
  already. Each new event is written in one transaction (event, prices, sections, rows
  and seats), so a crash never leaves half a seat map.
- Fast: seats go in with COPY (asyncpg ``copy_records_to_table``), and Redis loads overlap
  the PostgreSQL writes (event N is loaded while event N+1 is copied); a new event is
  loaded from memory, an existing one through ``rebuild_inventory``.
"""

from __future__ import annotations

import asyncio
import csv
import re
import time
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

import asyncpg
from redis.asyncio.cluster import ClusterNode, RedisCluster

from core.events import SectionPlan, parse_price_minor, plan_seat_map, price_categories
from core.inventory import SINGLE_PARTITION, Inventory
from migrations import runner
from migrations.inventory import InventoryLoader, read_partition_plans, rebuild_inventory

CSV_PATH = Path(__file__).resolve().parent / "data" / "seed_events.csv"
VENUE_TZ = ZoneInfo("America/Lima")
# The earliest event lands this many days after today.
LEAD_DAYS = 21


@dataclass(frozen=True, slots=True)
class SeedEvent:
    """One line of the CSV, with its date already moved into the future."""

    slug: str
    title: str
    category: str
    venue: str
    address: str
    starts_at: datetime  # aware
    base_price_minor: int
    capacity: int


@dataclass(slots=True)
class SeedReport:
    created: list[tuple[int, str, int]] = field(default_factory=list)  # (id, slug, seats)
    existing: list[tuple[int, str]] = field(default_factory=list)
    inventory_loaded: list[int] = field(default_factory=list)
    inventory_present: list[int] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def event_ids(self) -> list[int]:
        return sorted([e[0] for e in self.created] + [e[0] for e in self.existing])

    def lines(self) -> list[str]:
        out = [f"created event {i} {slug} ({n} seats)" for i, slug, n in self.created]
        if self.existing:
            out.append(f"{len(self.existing)} event(s) already present, left as they are")
        if self.inventory_loaded:
            out.append(f"loaded the Redis inventory of {len(self.inventory_loaded)} event(s)")
        if self.inventory_present:
            out.append(f"{len(self.inventory_present)} inventory(ies) already in Redis, kept")
        out += [f"{step}: {seconds:.2f}s" for step, seconds in self.timings.items()]
        return out


class InventoryGateway(InventoryLoader, Protocol):
    """The part of ``core.inventory.Inventory`` the seed needs."""

    async def availability(self, event_id: int) -> dict[str, int]: ...


def slugify(title: str) -> str:
    """``"El Avaro de Molière"`` -> ``"el-avaro-de-moliere"`` (ASCII, lowercase, dashes)."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")


def read_csv(path: Path = CSV_PATH, today: date | None = None) -> list[SeedEvent]:
    """The CSV's events with dates shifted so the earliest is ``LEAD_DAYS`` from ``today``."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    local = [datetime.fromisoformat(r["starts_at"]) for r in rows]
    today = today or datetime.now(VENUE_TZ).date()
    shift = (today + timedelta(days=LEAD_DAYS)) - min(local).date()
    return [
        SeedEvent(
            slug=slugify(r["title"]),
            title=r["title"].strip(),
            category=r["category"].strip().upper(),
            venue=r["venue"].strip(),
            address=r["venue_address"].strip(),
            # Shift the wall-clock time, then attach the zone: 20:00 stays 20:00 in Lima.
            starts_at=(when + shift).replace(tzinfo=VENUE_TZ),
            base_price_minor=parse_price_minor(r["base_price"]),
            capacity=int(r["capacity"]),
        )
        for r, when in zip(rows, local, strict=True)
    ]


async def _venue_id(conn: asyncpg.Connection, name: str, address: str) -> int:
    venue_id = await conn.fetchval(
        "INSERT INTO catalog.venues (name, address) VALUES ($1, $2)"
        " ON CONFLICT (name) DO NOTHING RETURNING id",
        name,
        address,
    )
    if venue_id is None:
        venue_id = await conn.fetchval("SELECT id FROM catalog.venues WHERE name = $1", name)
    return int(venue_id)


async def seed_event(
    conn: asyncpg.Connection, event: SeedEvent, sale_opens_at: datetime
) -> tuple[int, int | None]:
    """Write one event and its seat map in one transaction.

    Returns ``(event_id, seats written)``; seats is None when the event already existed.
    """
    async with conn.transaction():
        venue_id = await _venue_id(conn, event.venue, event.address)
        event_id = await conn.fetchval(
            """
            INSERT INTO catalog.events (slug, title, category, venue_id, starts_at,
                sale_opens_at, sale_closes_at, status, capacity, base_price_minor)
            VALUES ($1, $2, $3, $4, $5, $6, $5, 'published', $7, $8)
            ON CONFLICT (slug) DO NOTHING
            RETURNING id
            """,
            event.slug,
            event.title,
            event.category,
            venue_id,
            event.starts_at,
            min(sale_opens_at, event.starts_at - timedelta(days=1)),
            event.capacity,
            event.base_price_minor,
        )
        if event_id is None:
            existing = await conn.fetchval(
                "SELECT id FROM catalog.events WHERE slug = $1", event.slug
            )
            return int(existing), None
        await conn.executemany(
            "INSERT INTO catalog.price_categories"
            " (event_id, code, name, price_minor, currency, position)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            [
                (event_id, p.code, p.name, p.price_minor, p.currency, i)
                for i, p in enumerate(price_categories(event.base_price_minor))
            ],
        )
        plan = plan_seat_map(event.capacity)
        await conn.copy_records_to_table(
            "sections",
            schema_name="catalog",
            columns=["event_id", "code", "name", "position", "partition"],
            records=[(event_id, s.code, s.name, i, 0) for i, s in enumerate(plan)],
        )
        await conn.copy_records_to_table(
            "rows",
            schema_name="catalog",
            columns=["event_id", "section", "label", "position"],
            records=[(event_id, s.code, r.label, i) for s in plan for i, r in enumerate(s.rows)],
        )
        seats = _seat_records(event_id, plan)
        await conn.copy_records_to_table(
            "seats",
            schema_name="catalog",
            columns=["event_id", "section", "row_label", "number", "category"],
            records=seats,
        )
        return int(event_id), len(seats)


def _seat_records(
    event_id: int, plan: Sequence[SectionPlan]
) -> list[tuple[int, str, str, int, str]]:
    return [
        (event_id, s.code, r.label, n, s.category)
        for s in plan
        for r in s.rows
        for n in range(1, r.seats + 1)
    ]


async def load_inventories(
    conn: asyncpg.Connection,
    inventory: InventoryGateway,
    event_ids: Sequence[int],
    *,
    reload: bool = False,
) -> tuple[list[int], list[int]]:
    """Rebuild the Redis inventory of each event that has none (every one if ``reload``).

    Returns ``(loaded, kept)``. An inventory already in Redis is kept unless ``reload``:
    ``Inventory.load`` replaces a partition and would drop its live holds.
    """
    loaded: list[int] = []
    kept: list[int] = []
    for event_id in event_ids:
        if not reload and await inventory.availability(event_id):
            kept.append(event_id)
            continue
        await rebuild_inventory(conn, inventory, event_id)
        loaded.append(event_id)
    return loaded, kept


async def seed(
    dsn: str,
    inventory: InventoryGateway | None,
    events: Iterable[SeedEvent] | None = None,
    *,
    reload_inventory: bool = False,
) -> SeedReport:
    """Migrate ``dsn``, write ``events`` (default: the CSV) and load their inventory.

    ``inventory`` None skips Redis. An event whose inventory is already in Redis is kept
    as it is (live holds survive a re-run) unless ``reload_inventory``.
    """
    report = SeedReport()
    started = time.perf_counter()
    await runner.migrate(dsn)
    report.timings["migrate"] = time.perf_counter() - started
    events = list(read_csv() if events is None else events)
    sale_opens_at = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    # PostgreSQL writes and Redis loads overlap: while event N+1 is copied into
    # PostgreSQL, event N is loaded into Redis (two servers, two cores).
    queue: asyncio.Queue[tuple[int, list[tuple[str, str]] | None] | None] = asyncio.Queue()
    writer: asyncpg.Connection = await asyncpg.connect(dsn)
    reader: asyncpg.Connection | None = None
    try:

        async def write_catalog() -> None:
            step = time.perf_counter()
            for event in events:
                event_id, written = await seed_event(writer, event, sale_opens_at)
                if written is None:
                    report.existing.append((event_id, event.slug))
                    queue.put_nowait((event_id, None))
                else:
                    report.created.append((event_id, event.slug, written))
                    queue.put_nowait((event_id, layout_seats(plan_seat_map(event.capacity))))
            queue.put_nowait(None)
            report.timings["postgres"] = time.perf_counter() - step

        async def load_redis(inventory: InventoryGateway, reader: asyncpg.Connection) -> None:
            busy = 0.0
            while (item := await queue.get()) is not None:
                step = time.perf_counter()
                event_id, seats = item
                if not reload_inventory and await inventory.availability(event_id):
                    report.inventory_present.append(event_id)
                elif seats is None:
                    # Existing event: PostgreSQL knows its seats and what was sold.
                    await rebuild_inventory(reader, inventory, event_id)
                    report.inventory_loaded.append(event_id)
                else:
                    # Just written, one partition, nothing sold yet: load from memory.
                    await inventory.load(event_id, 0, seats, {})
                    report.inventory_loaded.append(event_id)
                busy += time.perf_counter() - step
            report.timings["redis"] = busy

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(write_catalog())
            if inventory is not None:
                reader = await asyncpg.connect(dsn)
                tasks.create_task(load_redis(inventory, reader))
    finally:
        await writer.close()
        if reader is not None:
            await reader.close()
    report.timings["total"] = time.perf_counter() - started
    return report


def layout_seats(plan: Sequence[SectionPlan]) -> list[tuple[str, str]]:
    """(seat_id, category) of a planned map in layout order — the order
    ``migrations.inventory.read_inventory`` reads back: section, row, number."""
    return [
        (f"{s.code}-{r.label}-{n}", s.category)
        for s in plan
        for r in s.rows
        for n in range(1, r.seats + 1)
    ]


def _cluster_client() -> RedisCluster:
    from core.settings import load_settings

    settings = load_settings()
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in settings.redis.startup_nodes()],
        decode_responses=False,
    )


async def seed_from_settings(
    dsn: str, *, load_inventory: bool = True, limit: int | None = None
) -> SeedReport:
    """The CLI's seed: the CSV (or its first ``limit`` events) and the configured Redis."""
    if await runner.ensure_database(dsn):
        print("created database")
    events = read_csv()[:limit] if limit else None
    if not load_inventory:
        return await seed(dsn, None, events)
    client = _cluster_client()
    try:
        await client.initialize()
        return await seed(dsn, Inventory(client), events)
    finally:
        await client.aclose()


async def rebuild_from_settings(
    dsn: str, event_ids: Sequence[int] | None = None, *, force: bool = False
) -> tuple[list[int], list[int]]:
    """The CLI's cold-start rebuild: published events (or ``event_ids``) from PostgreSQL
    into the configured Redis Cluster; returns ``(loaded, kept)``. Paused events are
    rebuilt too (their sale gate stays shut, ``rebuild_inventory``)."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn)
    client = _cluster_client()
    try:
        await client.initialize()
        plans = await read_partition_plans(conn)
        inventory = Inventory(client, plans=lambda e: plans.get(e, SINGLE_PARTITION))
        if event_ids is None:
            rows = await conn.fetch(
                "SELECT id FROM catalog.events WHERE status IN ('published', 'paused') ORDER BY id"
            )
            event_ids = [r["id"] for r in rows]
        return await load_inventories(conn, inventory, event_ids, reload=force)
    finally:
        await client.aclose()
        await conn.close()
