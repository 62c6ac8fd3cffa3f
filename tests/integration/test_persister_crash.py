"""The persister is SIGKILLed in the middle of a batch and restarted.

Real processes (``python -m workers.persister``), the real broker, PostgreSQL and the
Redis inventory: every accepted order (in ``orders.placed``) must end confirmed exactly
once, with no duplicate tickets, and the sold seats in Redis must equal the tickets.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from core.inventory import Inventory, partition_keys
from core.orders import encode, event_key, topic
from core.settings import Settings
from tests.conftest import fresh_event_id
from tests.integration.api_servers import free_port, settings_env, with_overrides
from tests.integration.catalog_seed import cluster_client
from tests.integration.test_orders_support import (
    create_catalog_event,
    order_placed,
    produce,
    seat_ids,
)
from workers.runtime import ensure_topics

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ORDERS = 3000
SEATS_PER_ORDER = 2


def start_persister(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TB_")}
    env.update(settings_env(settings))
    env["TB_WORKERS_PERSISTER_PORT"] = str(free_port())
    return subprocess.Popen(
        [sys.executable, "-m", "workers.persister"],
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


async def count_orders(conn: asyncpg.Connection, event_id: int) -> int:
    value: int = await conn.fetchval(
        "SELECT count(*) FROM orders.orders WHERE event_id = $1", event_id
    )
    return value


async def test_kill_mid_batch_and_restart(
    db_settings: Settings, pg_dsn: str, services: dict[str, str], tmp_path: Path
) -> None:
    # A persister group of its own, so no in-process persister of another module competes.
    prefix = f"{db_settings.kafka.topic_prefix}crash{os.getpid()}."
    settings = with_overrides(db_settings, kafka={"topic_prefix": prefix})
    await ensure_topics(settings)
    event_id = fresh_event_id()
    seats = seat_ids(ORDERS * SEATS_PER_ORDER)
    await create_catalog_event(pg_dsn, event_id, seats)
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    inventory = Inventory(redis)
    await inventory.load(event_id, 0, [(s, "GENERAL") for s in seats])
    orders = [
        order_placed(event_id, seats[i : i + SEATS_PER_ORDER], buyer=f"crash-{i}")
        for i in range(0, len(seats), SEATS_PER_ORDER)
    ]
    await produce(
        settings.kafka.bootstrap,
        topic(prefix, "orders.placed"),
        [(event_key(o.event_id), encode(o)) for o in orders],
    )
    log = tmp_path / "persister.log"
    conn = await asyncpg.connect(pg_dsn)
    stats: dict[str, Any] = {}
    try:
        first = start_persister(settings, log)
        try:
            deadline = time.monotonic() + 90
            while (n := await count_orders(conn, event_id)) == 0:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                assert first.poll() is None, log.read_text()[-3000:]
                await asyncio.sleep(0.005)
            # Some batches are committed; the next one is in flight: kill without warning.
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=10)
            stats["at_kill"] = n
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGKILL)
        assert n < ORDERS, "the persister finished before it could be killed"

        second = start_persister(settings, log)
        try:
            deadline = time.monotonic() + 120
            while await count_orders(conn, event_id) < ORDERS:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                assert second.poll() is None, log.read_text()[-3000:]
                await asyncio.sleep(0.1)

            async def drained() -> bool:
                _, statuses = await inventory.seat_statuses(event_id)
                return list(statuses.values()).count("sold") == len(seats)

            while not await drained():
                assert time.monotonic() < deadline, "Redis was not updated"
                await asyncio.sleep(0.1)
        finally:
            os.killpg(second.pid, signal.SIGTERM)
            second.wait(timeout=20)

        rows = await conn.fetch(
            "SELECT status, count(*) FROM orders.orders WHERE event_id = $1 GROUP BY 1", event_id
        )
        assert dict(rows) == {"confirmed": ORDERS}
        tickets = await conn.fetch(
            "SELECT seat_id, order_id::text FROM orders.tickets WHERE event_id = $1", event_id
        )
        assert len(tickets) == len(seats)
        assert sorted(t["seat_id"] for t in tickets) == sorted(seats)
        expected = {s.seat_id: o.order_id for o in orders for s in o.seats}
        assert {t["seat_id"]: t["order_id"] for t in tickets} == expected
        span = await conn.fetchrow(
            "SELECT count(*) AS n, extract(epoch FROM max(decided_at) - min(decided_at)) AS s"
            " FROM orders.orders WHERE event_id = $1 AND order_id <> ALL($2::uuid[])",
            event_id,
            [
                str(r["order_id"])
                for r in await conn.fetch(
                    "SELECT order_id FROM orders.orders WHERE event_id = $1"
                    " ORDER BY decided_at LIMIT $2",
                    event_id,
                    stats["at_kill"],
                )
            ],
        )
        if span["s"]:
            print(
                f"\npersister after restart: {span['n']} orders, "
                f"{span['n'] * SEATS_PER_ORDER / float(span['s']):.0f} tickets/s"
            )
    finally:
        await conn.close()
        for key in partition_keys(event_id, 0):
            await redis.delete(key)
        await redis.aclose()
