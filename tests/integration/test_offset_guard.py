"""The workers' offset guard against the real broker (Tansu).

A consumer whose position is past its partition's end (the log was truncated or replaced,
as when the memory-only dev broker restarts or a Kafka cluster is restored) is sent back
to the start, so the records written since are read; a consumer at or before the end is
left where it is. The dev broker answers a fetch past the end with no records instead of
OFFSET_OUT_OF_RANGE, so without the guard such a consumer reads nothing at all.
"""

from __future__ import annotations

import asyncio
import os
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, Counter

from workers.runtime import OffsetGuard


async def _topic_with(bootstrap: str, n: int) -> str:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    name = f"offset-guard-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(name, f"r{i}".encode())
    finally:
        await producer.stop()
    return name


def _resets() -> Counter:
    return Counter("resets", "test", ["topic", "group"], registry=CollectorRegistry())


async def test_a_consumer_past_the_end_is_sent_back_to_the_start(kafka_bootstrap: str) -> None:
    name = await _topic_with(kafka_bootstrap, 3)
    tp = TopicPartition(name, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        consumer.seek(tp, 1_000)  # where it stood in the log the broker lost
        # As the dev broker answers: nothing (its fetch tells the true end), and the
        # consumer stays where it was.
        for _ in range(20):
            assert not await consumer.getmany(tp, timeout_ms=500)
            if consumer.highwater(tp) is not None:
                break
        assert consumer.highwater(tp) == 3
        assert await consumer.position(tp) == 1_000

        guard = OffsetGuard(resets := _resets())
        assert await guard.check(consumer) == []  # once could be a moment: look again
        assert await guard.check(consumer) == [tp]
        assert resets.labels(topic=name, group="")._value.get() == 1
        got: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + 20
        while len(got) < 3 and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(tp, timeout_ms=500)).values():
                got.extend(r.value for r in records)
        assert got == [b"r0", b"r1", b"r2"]
    finally:
        await consumer.stop()


async def test_a_consumer_within_the_log_is_left_where_it_is(kafka_bootstrap: str) -> None:
    name = await _topic_with(kafka_bootstrap, 3)
    tp = TopicPartition(name, 0)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign([tp])
        guard = OffsetGuard(resets := _resets())
        got = 0
        while got < 3:  # read it all: the consumer is at the end and knows where it is
            got += sum(len(r) for r in (await consumer.getmany(tp, timeout_ms=500)).values())
        for offset in (3, 2, 3):  # at the end (caught up), inside the log, at the end
            consumer.seek(tp, offset)
            for _ in range(2):
                assert await guard.check(consumer) == []
                assert await consumer.position(tp) == offset
        assert resets.labels(topic=name, group="")._value.get() == 0
    finally:
        await consumer.stop()
