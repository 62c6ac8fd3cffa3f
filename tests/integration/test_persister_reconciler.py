"""The reconciler (workers/expirer.py) against the real Redis inventory, PostgreSQL and broker.

Each case builds the disagreement a crash would leave behind, runs one reconcile pass
and checks the repair and the mismatch counts.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import msgspec
import pytest

from core.inventory import Inventory, partition_keys
from core.orders import build_order, encode, pending_orders_key
from core.settings import Settings
from tests.conftest import fresh_event_id
from tests.integration.api_servers import with_overrides
from tests.integration.catalog_seed import cluster_client
from tests.integration.test_orders_support import (
    PRICES,
    TopicReader,
    create_catalog_event,
    order_placed,
    seat_ids,
)
from workers.expirer import Reconciler
from workers.persister import decide_and_write
from workers.runtime import create_broker, ensure_topics


class World(msgspec.Struct):
    event_id: int
    seats: list[str]
    inventory: Any
    reconciler: Any
    redis: Any
    settings: Any


@pytest.fixture
async def w(db_settings: Settings, pg_dsn: str, services: dict[str, str]) -> AsyncIterator[World]:
    settings = with_overrides(db_settings, workers={"reconcile_grace_s": 0.0})
    await ensure_topics(settings)
    event_id = fresh_event_id()
    seats = seat_ids(12)
    await create_catalog_event(pg_dsn, event_id, seats)
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    inventory = Inventory(redis)
    await inventory.load(event_id, 0, [(s, "GENERAL") for s in seats])
    broker = create_broker(settings, "reconciler-test")
    await broker.connect()
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    assert pool is not None
    reconciler = Reconciler(settings, broker, pool, redis)
    try:
        yield World(
            event_id=event_id,
            seats=seats,
            inventory=inventory,
            reconciler=reconciler,
            redis=redis,
            settings=settings,
        )
    finally:
        await pool.close()
        await broker.stop()
        for key in partition_keys(event_id, 0):
            await redis.delete(key)
        await redis.aclose()


async def _pending_order(w: World, buyer: str, seats: list[str]) -> str:
    hold = await w.inventory.hold(w.event_id, seats, buyer)
    order_id = str(uuid.uuid4())
    await w.inventory.confirm(hold.hold_id, buyer, order_id)
    return order_id


async def _statuses(w: World) -> dict[str, str]:
    _, statuses = await w.inventory.seat_statuses(w.event_id)
    return dict(statuses)


async def test_stuck_pending_order_is_republished_from_its_record(w: World) -> None:
    seats = w.seats[:2]
    order_id = await _pending_order(w, "rec-1", seats)
    placed = build_order(
        order_id=order_id,
        event_id=w.event_id,
        partition=0,
        hold_id="h1.0.0000000000000000",
        buyer="rec-1",
        seats=seats,
        categories=["GENERAL"] * 2,
        prices=PRICES,
        placed_at=0,
    )
    await w.redis.hset(pending_orders_key("rec-1"), order_id, encode(placed))
    found = await w.reconciler.reconcile([(w.event_id, 0)])
    assert found["pending_stuck"] == 1
    placed_topic = w.settings.kafka.topic_prefix + "orders.placed"
    async with TopicReader(w.settings.kafka.bootstrap, [placed_topic]) as reader:
        await reader.wait_for(lambda m: any(d.get("order_id") == order_id for _, d in m), 30)
    await w.redis.delete(pending_orders_key("rec-1"))


async def test_stuck_pending_order_without_record_is_released(w: World) -> None:
    seats = w.seats[2:4]
    await _pending_order(w, "rec-2", seats)
    assert {(await _statuses(w))[s] for s in seats} == {"pending"}
    found = await w.reconciler.reconcile([(w.event_id, 0)])
    assert found["pending_stuck"] == 1
    statuses = await _statuses(w)
    assert all(s not in statuses for s in seats)  # free again


async def test_ticket_redis_forgot_is_marked_sold(w: World, pg_dsn: str) -> None:
    seats = w.seats[4:6]
    order = order_placed(w.event_id, seats, buyer="rec-3")
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            decisions = await decide_and_write(conn, [order])
    finally:
        await conn.close()
    assert decisions[0].status == "confirmed"
    found = await w.reconciler.reconcile([(w.event_id, 0)])
    assert found["ticket_not_sold"] == 2
    assert {(await _statuses(w))[s] for s in seats} == {"sold"}
    # A second pass finds nothing left to do.
    again = await w.reconciler.reconcile([(w.event_id, 0)])
    assert again["ticket_not_sold"] == 0


async def test_pending_order_rejected_in_postgres_is_freed(w: World, pg_dsn: str) -> None:
    seats = w.seats[6:8]
    # Another order already owns seat 6 in PostgreSQL; this one is then rejected there.
    winner = order_placed(w.event_id, [seats[0]], buyer="rec-w")
    order_id = await _pending_order(w, "rec-4", seats)
    loser = order_placed(w.event_id, seats, buyer="rec-4", order_id=order_id)
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            decided = await decide_and_write(conn, [winner, loser])
    finally:
        await conn.close()
    assert [d.status for d in decided] == ["confirmed", "rejected"]
    found = await w.reconciler.reconcile([(w.event_id, 0)])
    assert found["pending_decided"] >= 1
    statuses = await _statuses(w)
    assert statuses[seats[0]] == "sold"  # the winner's ticket, forced sold
    assert seats[1] not in statuses  # the loser's other seat is free


async def test_sweep_frees_expired_holds(w: World) -> None:
    from core.holds import MIN_TTL_MS

    seats = w.seats[8:10]
    await w.inventory.hold(w.event_id, seats, "rec-5", ttl_s=MIN_TTL_MS / 1000)
    await asyncio.sleep(MIN_TTL_MS / 1000 + 0.3)
    swept = await w.reconciler.sweep()
    assert swept >= 1
    raw = await w.redis.hmget(partition_keys(w.event_id, 0)[5], seats)  # the state hash
    assert raw == [None, None]  # no entry: free


async def test_seat_gauge_counts_each_status(w: World) -> None:
    from workers import metrics

    await w.inventory.hold(w.event_id, w.seats[10:12], "rec-6")
    await w.reconciler.reconcile([(w.event_id, 0)])
    value = metrics.REGISTRY.get_sample_value
    labels = {"event": str(w.event_id)}
    assert value("ticketbuster_seats", {**labels, "status": "held"}) == 2
    assert value("ticketbuster_seats", {**labels, "status": "free"}) == len(w.seats) - 2
    assert value("ticketbuster_oversold_seats") == 0


async def test_an_order_released_too_early_but_committed_is_sold_and_the_pass_goes_on(
    w: World, pg_dsn: str
) -> None:
    """The reconciler released a pending order it thought lost (its buyer's record was
    gone), but the persister was only late: PostgreSQL then commits it. The next pass
    must sell its seats under it (PostgreSQL wins), and must still repair the rest of the
    partition, instead of failing on that order at every pass."""
    late = w.seats[6:8]
    order_id = await _pending_order(w, "rec-5", late)
    released = await w.reconciler.reconcile([(w.event_id, 0)])
    assert released["pending_stuck"] == 1
    statuses = await _statuses(w)
    assert all(s not in statuses for s in late)  # free again in Redis
    forgotten = w.seats[8:10]  # a second disagreement in the same partition
    conn = await asyncpg.connect(pg_dsn)
    try:
        async with conn.transaction():
            decisions = await decide_and_write(
                conn,
                [
                    order_placed(w.event_id, late, buyer="rec-5", order_id=order_id),
                    order_placed(w.event_id, forgotten, buyer="rec-6"),
                ],
            )
    finally:
        await conn.close()
    assert [d.status for d in decisions] == ["confirmed", "confirmed"]

    found = await w.reconciler.reconcile([(w.event_id, 0)])
    assert found["ticket_not_sold"] == 4
    assert found["repair_failed"] == 0 and found["partition_failed"] == 0
    statuses = await _statuses(w)
    assert {statuses[s] for s in late + forgotten} == {"sold"}
    again = await w.reconciler.reconcile([(w.event_id, 0)])
    assert again["ticket_not_sold"] == 0
