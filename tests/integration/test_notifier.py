"""The notifier against a real Redis Cluster and the real broker: each status once.

At least once upstream (a redelivered batch, a stuck order the reconciler re-published)
means the same OrderConfirmed comes back; the buyer's capped stream must still hold each
(order, status) once, or repeats push out what a reconnecting client has to read.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from aiokafka import ConsumerRecord

from core.orders import (
    TOPIC_CONFIRMED,
    TOPIC_REJECTED,
    OrderConfirmed,
    OrderRejected,
    encode,
    topic,
    user_events_key,
)
from core.settings import Settings
from tests.integration.catalog_seed import cluster_client
from workers.notifier import Notifier
from workers.runtime import create_broker, ensure_topics


@pytest.fixture
async def notifier(settings: Settings, services: dict[str, str]) -> AsyncIterator[Notifier]:
    await ensure_topics(settings)
    broker = create_broker(settings, "notifier-test")
    await broker.start()
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    notifier = Notifier(settings, broker, redis)
    try:
        yield notifier
    finally:
        notifier.link.close()
        await redis.aclose()
        await broker.stop()


def _record(settings: Settings, name: str, value: Any, offset: int) -> ConsumerRecord[Any, Any]:
    return ConsumerRecord(
        topic(settings.kafka.topic_prefix, name),
        0,
        offset,
        0,
        0,
        None,
        encode(value),
        None,
        0,
        0,
        (),
    )


async def _stream(notifier: Notifier, buyer: str) -> list[tuple[str, str]]:
    entries: Any = await notifier.redis.xrange(user_events_key(buyer))
    docs = [msgspec.json.decode(fields[b"data"]) for _, fields in entries]
    return [(doc["order_id"], doc["status"]) for doc in docs]


async def test_a_status_that_comes_again_is_appended_once(
    notifier: Notifier, settings: Settings
) -> None:
    buyer = f"buyer-{uuid.uuid4().hex}"
    confirmed = OrderConfirmed(str(uuid.uuid4()), 1, 0, buyer, (), 1, 2)
    rejected = OrderRejected(str(uuid.uuid4()), 1, 0, buyer, "seat_taken", ("A-1",), 1, 2)
    # Twice in one batch, then the batch redelivered, then a re-published copy.
    batch = [
        _record(settings, TOPIC_CONFIRMED, confirmed, 0),
        _record(settings, TOPIC_CONFIRMED, confirmed, 1),
        _record(settings, TOPIC_REJECTED, rejected, 0),
    ]
    await notifier.handle(batch)
    await notifier.handle(batch)
    await notifier.handle([_record(settings, TOPIC_CONFIRMED, confirmed, 2)])
    assert await _stream(notifier, buyer) == [
        (confirmed.order_id, "confirmed"),
        (rejected.order_id, "rejected"),
    ]


async def test_a_node_without_the_script_gets_it_and_nothing_is_lost(
    notifier: Notifier, settings: Settings
) -> None:
    buyer = f"buyer-{uuid.uuid4().hex}"
    first = OrderConfirmed(str(uuid.uuid4()), 1, 0, buyer, (), 1, 2)
    await notifier.handle([_record(settings, TOPIC_CONFIRMED, first, 0)])
    await notifier.redis.script_flush()  # as a fresh or newly promoted primary
    second = OrderConfirmed(str(uuid.uuid4()), 1, 0, buyer, (), 1, 2)
    await notifier.handle([_record(settings, TOPIC_CONFIRMED, second, 1)])
    assert await _stream(notifier, buyer) == [
        (first.order_id, "confirmed"),
        (second.order_id, "confirmed"),
    ]
