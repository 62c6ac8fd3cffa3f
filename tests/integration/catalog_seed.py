"""The full demo seed (20 events, 504,000 seats), run once per test process.

Import ``seeded_catalog`` into a test module to use it. It gets a database of its own
(made and migrated by the real runner, dropped at the end), not the session's ``pg_dsn``:
other modules add their own events to that one, and these tests count events. Event ids
start at a random large base (the identity is restarted before seeding), so the Redis
inventory never collides with ``make dev`` or with a concurrent test run on the same
cluster. The Redis keys of the seeded events are deleted when the last module using the
fixture finishes.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from core.inventory import Inventory, partition_keys
from migrations.runner import migrate
from migrations.seed import SeedEvent, SeedReport, read_csv, seed


@dataclass
class SeededCatalog:
    dsn: str
    report: SeedReport
    events: list[SeedEvent]  # CSV order
    ids: dict[str, int]  # slug -> event id
    seconds: float


_state: dict[str, object] = {"users": 0}
_lock = asyncio.Lock()


def cluster_client(nodes: str) -> RedisCluster:
    startup = [ClusterNode(h, int(p)) for h, _, p in (n.rpartition(":") for n in nodes.split(","))]
    return RedisCluster(startup_nodes=startup, decode_responses=False)


async def restart_event_ids(dsn: str) -> int:
    """Make the next event id a fresh random large number; returns it."""
    base = secrets.randbelow(2**40) + 10**12
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"ALTER TABLE catalog.events ALTER COLUMN id RESTART WITH {base}")
    finally:
        await conn.close()
    return base


async def seed_test_event(
    dsn: str,
    redis: RedisCluster,
    *,
    name: str,
    address: str,
    days_ahead: int,
    base_price_minor: int,
    capacity: int,
) -> tuple[int, dict[str, str]]:
    """Seed one small event of this test's own (fresh ids, inventory loaded into Redis);
    returns its id and its seats (seat id -> price category)."""
    import uuid
    from datetime import UTC, datetime, timedelta

    await restart_event_ids(dsn)
    event = SeedEvent(
        slug=f"{name.lower().replace(' ', '-')}-{uuid.uuid4().hex[:8]}",
        title=name,
        category="CONCERT",
        venue=f"{name} Hall {uuid.uuid4().hex[:6]}",
        address=address,
        starts_at=datetime.now(UTC) + timedelta(days=days_ahead),
        base_price_minor=base_price_minor,
        capacity=capacity,
    )
    report = await seed(dsn, Inventory(redis), [event])
    event_id = int(report.created[0][0])
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT seat_id, category FROM catalog.seats WHERE event_id = $1", event_id
        )
    finally:
        await conn.close()
    return event_id, {r["seat_id"]: r["category"] for r in rows}


async def _admin(base: str, sql: str) -> None:
    conn = await asyncpg.connect(urlunsplit(urlsplit(base)._replace(path="/postgres")))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def drop_inventory(client: RedisCluster, event_ids: list[int]) -> None:
    for event_id in event_ids:
        for key in partition_keys(event_id, 0):
            await client.delete(key)


@pytest.fixture(scope="session")
async def seeded_catalog(services: dict[str, str]) -> AsyncIterator[SeededCatalog]:
    async with _lock:
        if "catalog" not in _state:
            loop = asyncio.get_running_loop()
            base = services["TB_DATABASE_URL"]
            name = f"tb_catalog_{secrets.token_hex(4)}"
            dsn = urlunsplit(urlsplit(base)._replace(path=f"/{name}"))
            await _admin(base, f'CREATE DATABASE "{name}"')
            _state["database"] = (base, name)
            await migrate(dsn)
            await restart_event_ids(dsn)
            client = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
            await client.initialize()
            _state["client"] = client
            events = read_csv()
            started = loop.time()
            report = await seed(dsn, Inventory(client), events)
            seconds = loop.time() - started
            ids = {slug: event_id for event_id, slug, _ in report.created}
            _state["catalog"] = SeededCatalog(dsn, report, events, ids, seconds)
        _state["users"] = int(str(_state["users"])) + 1
    catalog = _state["catalog"]
    assert isinstance(catalog, SeededCatalog)
    yield catalog
    async with _lock:
        _state["users"] = int(str(_state["users"])) - 1
        if _state["users"] == 0:
            client = _state.pop("client")
            assert isinstance(client, RedisCluster)
            await drop_inventory(client, list(catalog.ids.values()))
            await client.aclose()
            _state.pop("catalog")
            database = _state.pop("database")
            assert isinstance(database, tuple)
            base, name = database
            await _admin(base, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
