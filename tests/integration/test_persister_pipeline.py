"""The persister's batch pipeline against the real broker (Tansu) and PostgreSQL.

A batch settles (outcomes published, then its own offsets committed) while the next one is
written. The offsets committed must be exactly those of the batches whose outcomes the
broker acknowledged, never the consumer's position (already past the next batch); a
settling that fails rewinds both batches, and the redelivery decides them again from
PostgreSQL. Publishing is the one part made to fail (a ``send`` that raises while the
"broker is away"); the consumer, the topic, the group's commits and PostgreSQL are real.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from core.orders import encode, event_key, topic
from core.settings import Settings
from tests.conftest import fresh_event_id
from tests.integration.api_servers import with_overrides
from tests.integration.test_orders_support import (
    create_catalog_event,
    order_placed,
    produce,
    seat_ids,
)
from workers.persister import BatchPipeline, Persister
from workers.runtime import ensure_topics


async def fetch(consumer: AIOKafkaConsumer, n: int) -> list[ConsumerRecord[Any, Any]]:
    """The next ``n`` records, in offset order (one partition)."""
    got: list[ConsumerRecord[Any, Any]] = []
    deadline = asyncio.get_running_loop().time() + 30
    while len(got) < n:
        assert asyncio.get_running_loop().time() < deadline, f"got {len(got)} of {n} records"
        for records in (await consumer.getmany(timeout_ms=500, max_records=n - len(got))).values():
            got.extend(records)
    return sorted(got, key=lambda r: r.offset)


async def test_offsets_commit_per_batch_after_its_outcomes_and_a_failed_settling_rewinds(
    db_settings: Settings, pg_dsn: str
) -> None:
    prefix = f"{db_settings.kafka.topic_prefix}pipeline{os.getpid()}."
    settings = with_overrides(db_settings, kafka={"topic_prefix": prefix})
    await ensure_topics(settings)
    event_id = fresh_event_id()
    seats = seat_ids(8)
    await create_catalog_event(pg_dsn, event_id, seats)
    orders = [order_placed(event_id, [s], buyer=f"pipe-{i}") for i, s in enumerate(seats)]
    name = topic(prefix, "orders.placed")
    await produce(
        settings.kafka.bootstrap, name, [(event_key(event_id), encode(o)) for o in orders]
    )

    group = f"{prefix}pipeline-test"
    consumer = AIOKafkaConsumer(
        name,
        bootstrap_servers=settings.kafka.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    assert pool is not None
    confirmed: list[str] = []
    broker_away = True

    async def send(topic_name: str, value: bytes, key: bytes | None) -> asyncio.Future[None]:
        if broker_away:
            raise ConnectionError("broker away")
        if topic_name.endswith("orders.confirmed"):
            confirmed.append(msgspec.json.decode(value)["order_id"])
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acked.set_result(None)  # as the producer's future once the broker acknowledged
        return acked

    await consumer.start()
    try:
        persister = Persister(settings, None, pool, None)  # type: ignore[arg-type]
        persister.send = send
        pipeline = BatchPipeline(persister, group)
        records = await fetch(consumer, 8)
        tp = TopicPartition(name, records[0].partition)
        start = records[0].offset

        # Batch 1 is written; its settling fails while batch 2 is written.
        await pipeline.feed(consumer, records[:4])
        await pipeline.feed(consumer, records[4:])
        assert await consumer.committed(tp) is None  # nothing was committed
        assert await consumer.position(tp) == start  # both batches come again
        n = await pool.fetchval(
            "SELECT count(*) FROM orders.orders WHERE event_id = $1 AND status = 'confirmed'",
            event_id,
        )
        assert n == 8  # PostgreSQL has both batches all the same
        assert confirmed == []

        broker_away = False
        again = await fetch(consumer, 8)
        assert [r.offset for r in again] == [r.offset for r in records]
        await pipeline.feed(consumer, again[:4])
        await pipeline.feed(consumer, again[4:])  # batch 1 has settled by the time it returns
        # Exactly batch 1's offsets, not the position (past batch 2, not yet settled).
        assert await consumer.committed(tp) == start + 4
        await pipeline.flush()
        assert await consumer.committed(tp) == start + 8
        assert sorted(confirmed) == sorted(o.order_id for o in orders)  # decided once each
    finally:
        await consumer.stop()
        await pool.close()
