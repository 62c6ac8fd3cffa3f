"""The demo seed against real PostgreSQL and a real Redis Cluster."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from core.events import plan_seat_map, price_categories
from core.inventory import SINGLE_PARTITION, Inventory, partition_keys
from migrations.inventory import read_inventory, read_partition_plans, rebuild_inventory
from migrations.seed import SeedEvent, layout_seats, seed, seed_event
from tests.integration.catalog_seed import (
    SeededCatalog,
    cluster_client,
    drop_inventory,
    seeded_catalog,
)

__all__ = ["seeded_catalog"]

pytestmark = pytest.mark.slow

SEAT_ID = re.compile(r"^[A-Za-z0-9]{1,8}-[A-Za-z0-9]{1,4}-[0-9]{1,4}$")


async def _fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def test_twenty_events_with_seats_equal_to_capacity(seeded_catalog: SeededCatalog) -> None:
    rows = await _fetch(
        seeded_catalog.dsn,
        """
        SELECT e.slug, e.capacity, e.status,
               (SELECT count(*) FROM catalog.seats s WHERE s.event_id = e.id) AS seats
        FROM catalog.events e
        """,
    )
    assert len(rows) == 20
    by_slug = {r["slug"]: r for r in rows}
    for event in seeded_catalog.events:
        row = by_slug[event.slug]
        assert row["seats"] == row["capacity"] == event.capacity, event.slug
        assert row["status"] == "published"
    total = sum(r["seats"] for r in rows)
    assert total == sum(e.capacity for e in seeded_catalog.events) > 500_000
    print(f"\nfull seed of {total} seats took {seeded_catalog.seconds:.1f}s")


async def test_facts_of_the_csv_are_kept(seeded_catalog: SeededCatalog) -> None:
    rows = await _fetch(
        seeded_catalog.dsn,
        """
        SELECT e.slug, e.title, e.category, e.base_price_minor, v.name, v.address
        FROM catalog.events e JOIN catalog.venues v ON v.id = e.venue_id
        """,
    )
    by_slug = {r["slug"]: r for r in rows}
    for event in seeded_catalog.events:
        row = by_slug[event.slug]
        assert (row["title"], row["category"], row["name"], row["address"]) == (
            event.title,
            event.category,
            event.venue,
            event.address,
        )
        assert row["base_price_minor"] == event.base_price_minor
    coldplay = by_slug["coldplay-music-of-the-spheres-tour"]
    assert coldplay["base_price_minor"] == 19999
    assert coldplay["name"] == "Estadio Nacional"


async def test_dates_are_in_the_future_in_csv_order(seeded_catalog: SeededCatalog) -> None:
    rows = await _fetch(seeded_catalog.dsn, "SELECT slug, starts_at FROM catalog.events")
    starts = {r["slug"]: r["starts_at"] for r in rows}
    now = datetime.now(UTC)
    assert min(starts.values()) > now
    csv_order = sorted(seeded_catalog.events, key=lambda e: e.starts_at)
    db_order = sorted(starts, key=lambda slug: starts[slug])
    assert db_order == [e.slug for e in csv_order]
    # Gaps are kept: Stand Up Comedy (Feb 14, 21:00) to the ATP 250 (Feb 23, 10:00).
    gap = starts["torneo-atp-250-lima"] - starts["stand-up-comedy-noche-de-risas"]
    assert (gap.days, gap.seconds) == (8, 13 * 3600)


async def test_seat_map_prices_and_ids(seeded_catalog: SeededCatalog) -> None:
    event_id = seeded_catalog.ids["final-copa-libertadores-2026"]
    prices = await _fetch(
        seeded_catalog.dsn,
        "SELECT code, price_minor, currency FROM catalog.price_categories"
        " WHERE event_id = $1 ORDER BY position",
        event_id,
    )
    assert [(p["code"], p["price_minor"], p["currency"]) for p in prices] == [
        (p.code, p.price_minor, "PEN") for p in price_categories(35000)
    ]
    seats = await _fetch(
        seeded_catalog.dsn,
        "SELECT seat_id, section, category FROM catalog.seats WHERE event_id = $1",
        event_id,
    )
    assert len(seats) == 80_000
    assert all(SEAT_ID.match(s["seat_id"]) for s in seats)
    counts: dict[str, int] = {}
    for s in seats:
        counts[s["category"]] = counts.get(s["category"], 0) + 1
    assert counts == {"VIP": 8_000, "PLATINUM": 24_000, "GENERAL": 48_000}
    # Front sections (level 1) are VIP.
    assert {s["category"] for s in seats if s["section"].startswith("1")} == {"VIP"}
    rows = await _fetch(
        seeded_catalog.dsn,
        "SELECT count(*) AS n FROM catalog.seats WHERE event_id = $1 GROUP BY section, row_label",
        event_id,
    )
    assert all(20 <= r["n"] <= 40 for r in rows)
    assert len(rows) == sum(len(s.rows) for s in plan_seat_map(80_000))


async def test_inventory_is_loaded_into_redis(
    seeded_catalog: SeededCatalog, services: dict[str, str]
) -> None:
    client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await client.initialize()
    try:
        inventory = Inventory(client)
        for event in seeded_catalog.events:
            free = await inventory.availability(seeded_catalog.ids[event.slug])
            assert sum(free.values()) == event.capacity, event.slug
    finally:
        await client.aclose()


async def test_loaded_seats_are_in_the_order_postgres_gives_back(
    seeded_catalog: SeededCatalog,
) -> None:
    """The seed loads new events into Redis from memory; a rebuild reads PostgreSQL. Both
    must hand the inventory the same seats in the same (front-first) order."""
    event = next(e for e in seeded_catalog.events if e.capacity == 3500)
    conn = await asyncpg.connect(seeded_catalog.dsn)
    try:
        parts = await read_inventory(conn, seeded_catalog.ids[event.slug])
    finally:
        await conn.close()
    assert list(parts) == [0]
    assert parts[0].seats == layout_seats(plan_seat_map(event.capacity))


async def test_seed_again_changes_nothing(
    seeded_catalog: SeededCatalog, services: dict[str, str]
) -> None:
    snapshot_sql = """
        SELECT (SELECT count(*) FROM catalog.events) AS events,
               (SELECT count(*) FROM catalog.venues) AS venues,
               (SELECT count(*) FROM catalog.seats) AS seats,
               (SELECT count(*) FROM catalog.price_categories) AS prices,
               (SELECT string_agg(id || '@' || starts_at, ',' ORDER BY id)
                  FROM catalog.events) AS dates
    """
    before = (await _fetch(seeded_catalog.dsn, snapshot_sql))[0]
    client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await client.initialize()
    try:
        report = await seed(seeded_catalog.dsn, Inventory(client), seeded_catalog.events)
    finally:
        await client.aclose()
    after = (await _fetch(seeded_catalog.dsn, snapshot_sql))[0]
    assert dict(after) == dict(before)
    assert report.created == []
    assert sorted(i for i, _ in report.existing) == sorted(seeded_catalog.ids.values())
    # Inventories already in Redis are kept (live holds would survive a re-run).
    assert report.inventory_loaded == []
    assert len(report.inventory_present) == 20


async def test_rebuild_inventory_marks_persisted_tickets_sold(
    seeded_catalog: SeededCatalog, services: dict[str, str]
) -> None:
    event_id = seeded_catalog.ids["stand-up-comedy-noche-de-risas"]
    order_id = str(uuid.uuid4())
    seats = ["101-A-1", "101-A-2"]
    conn = await asyncpg.connect(seeded_catalog.dsn)
    try:
        await conn.execute(
            """INSERT INTO orders.orders (order_id, event_id, hold_id, buyer, status, seats,
                   total_minor, placed_at)
               VALUES ($1, $2, 'h0.0.0000000000000000', 'buyer-a', 'confirmed', '[]', 0, now())""",
            uuid.UUID(order_id),
            event_id,
        )
        for seat in seats:
            await conn.execute(
                """INSERT INTO orders.tickets (ticket_id, order_id, event_id, seat_id, holder,
                       category, price_minor)
                   VALUES ($1, $2, $3, $4, 'buyer-a', 'VIP', 9000)""",
                uuid.uuid4(),
                uuid.UUID(order_id),
                event_id,
                seat,
            )
        client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
        await client.initialize()
        try:
            inventory = Inventory(client)
            report = await rebuild_inventory(conn, inventory, event_id)
            assert (report.seats, report.sold, report.partitions) == (300, 2, 1)
            _, statuses = await inventory.seat_statuses(event_id)
            assert statuses == {seat: "sold" for seat in seats}
            free = await inventory.availability(event_id)
            assert sum(free.values()) == 298
            assert await inventory.buyer_usage(event_id, "buyer-a") == 2
        finally:
            await client.aclose()
    finally:
        await conn.close()


async def test_rebuild_follows_the_catalogs_partitions(
    seeded_catalog: SeededCatalog, services: dict[str, str]
) -> None:
    """An event split in two partitions by section is rebuilt into both."""
    base = seeded_catalog.events[0]
    event = SeedEvent(
        slug=f"split-{uuid.uuid4().hex[:8]}",
        title="Split test",
        category="OTHER",
        venue=base.venue,
        address=base.address,
        starts_at=base.starts_at,
        base_price_minor=1000,
        capacity=450,
    )
    conn = await asyncpg.connect(seeded_catalog.dsn)
    client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await client.initialize()
    event_id = 0
    try:
        event_id, written = await seed_event(conn, event, datetime.now(UTC))
        assert written == 450
        await conn.execute("UPDATE catalog.events SET partitions = 2 WHERE id = $1", event_id)
        await conn.execute(
            "UPDATE catalog.sections SET partition = 1 WHERE event_id = $1 AND code >= '300'",
            event_id,
        )
        plans = await read_partition_plans(conn)
        assert plans[event_id].count == 2
        assert plans[event_id].sections["301"] == 1 and plans[event_id].sections["101"] == 0
        inventory = Inventory(client, plans=lambda e: plans.get(e, SINGLE_PARTITION))
        report = await rebuild_inventory(conn, inventory, event_id)
        assert (report.partitions, report.seats) == (2, 450)
        assert await inventory.availability(event_id) == {
            "VIP": 45,
            "PLATINUM": 135,
            "GENERAL": 270,
        }
        hold = await inventory.hold(event_id, ["301-A-1"], "split-buyer")
        assert hold.partition == 1
        await inventory.release(hold.hold_id, "split-buyer")
    finally:
        if event_id:
            await drop_inventory(client, [event_id])
            for key in partition_keys(event_id, 1):
                await client.delete(key)
            # Leave the shared seeded catalog as the other tests expect it.
            await conn.execute("DELETE FROM catalog.events WHERE id = $1", event_id)
        await client.aclose()
        await conn.close()


def test_cli_seed_is_idempotent(services: dict[str, str]) -> None:
    """``python -m migrations seed`` on a new database (PostgreSQL only: the Redis load
    is covered above with fresh event ids), twice."""
    base = services["TB_DATABASE_URL"]
    name = f"tb_seed_cli_{secrets.token_hex(4)}"
    dsn = urlunsplit(urlsplit(base)._replace(path=f"/{name}"))
    command = [sys.executable, "-m", "migrations", "seed", "--dsn", dsn, "--no-inventory"]
    env = {**os.environ, **services}
    try:
        first = subprocess.run(
            [*command, "--limit", "3"], env=env, capture_output=True, text=True, check=True
        )
        assert first.stdout.count("created event") == 3
        second = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        assert second.stdout.count("created event") == 17
        assert "3 event(s) already present" in second.stdout
        third = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
        assert "created event" not in third.stdout
        assert "20 event(s) already present" in third.stdout
    finally:
        asyncio.run(_drop_database(base, name))


async def _drop_database(base: str, name: str) -> None:
    conn = await asyncpg.connect(urlunsplit(urlsplit(base)._replace(path="/postgres")))
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
