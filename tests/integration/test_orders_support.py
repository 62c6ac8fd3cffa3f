"""Helpers for the purchase-pipeline tests (no tests here): catalog rows, Kafka I/O.

Everything talks to the real servers: the session's own database, the Tansu broker
under the session's topic prefix.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable
from typing import Any

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from core.orders import OrderPlaced, OrderSeat

PRICES = {"VIP": 25000, "GENERAL": 9950}


def seat_ids(n: int, section: str = "101") -> list[str]:
    """n seat ids in rows R0, R1, R2... of 50 seats each."""
    return [f"{section}-R{i // 50}-{i % 50 + 1}" for i in range(n)]


async def create_catalog_event(
    dsn: str, event_id: int, seats: list[str], category: str = "GENERAL"
) -> None:
    """A published event with the given seats (all in one price category)."""
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            venue = await conn.fetchval(
                "INSERT INTO catalog.venues (name, address) VALUES ($1, 'Test') RETURNING id",
                f"Venue {event_id}",
            )
            await conn.execute(
                """
                INSERT INTO catalog.events (id, slug, title, category, venue_id, starts_at,
                    sale_opens_at, sale_closes_at, status, capacity, base_price_minor)
                OVERRIDING SYSTEM VALUE
                VALUES ($1, $2, $3, 'CONCERT', $4, now() + interval '30 days',
                        now() - interval '1 day', now() + interval '29 days', 'published',
                        $5, 9950)
                """,
                event_id,
                f"test-{event_id}",
                f"Test event {event_id}",
                venue,
                max(1, len(seats)),
            )
            await conn.executemany(
                "INSERT INTO catalog.price_categories (event_id, code, name, price_minor, position)"
                " VALUES ($1, $2, $2, $3, $4)",
                [(event_id, code, price, i) for i, (code, price) in enumerate(PRICES.items())],
            )
            parts = [s.split("-") for s in seats]
            sections = sorted({p[0] for p in parts})
            rows = sorted({(p[0], p[1]) for p in parts})
            await conn.executemany(
                "INSERT INTO catalog.sections (event_id, code, name, position)"
                " VALUES ($1, $2, $2, $3)",
                [(event_id, s, i) for i, s in enumerate(sections)],
            )
            await conn.executemany(
                "INSERT INTO catalog.rows (event_id, section, label, position)"
                " VALUES ($1, $2, $3, $4)",
                [(event_id, s, r, i) for i, (s, r) in enumerate(rows)],
            )
            await conn.copy_records_to_table(
                "seats",
                schema_name="catalog",
                columns=["event_id", "section", "row_label", "number", "category"],
                records=[(event_id, p[0], p[1], int(p[2]), category) for p in parts],
            )
    finally:
        await conn.close()


def order_placed(
    event_id: int,
    seats: Iterable[str],
    *,
    buyer: str = "buyer-1",
    order_id: str | None = None,
    category: str = "GENERAL",
) -> OrderPlaced:
    items = tuple(OrderSeat(seat_id=s, category=category, price=PRICES[category]) for s in seats)
    return OrderPlaced(
        order_id=order_id or str(uuid.uuid4()),
        event_id=event_id,
        partition=0,
        hold_id=f"h{event_id}.0.{uuid.uuid4().hex[:16]}",
        buyer=buyer,
        seats=items,
        total=sum(s.price for s in items),
        placed_at=time.time_ns() // 1_000_000,
    )


async def produce(bootstrap: str, topic: str, messages: Iterable[tuple[bytes, bytes]]) -> None:
    """Send (key, value) pairs with acks=all and wait for every ack."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        futures = [await producer.send(topic, value=v, key=k) for k, v in messages]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


class TopicReader:
    """Reads topics from the beginning (no group), keeping every decoded JSON message."""

    def __init__(self, bootstrap: str, topics: list[str]) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._consumer: AIOKafkaConsumer | None = None

    async def __aenter__(self) -> TopicReader:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, enable_auto_commit=False
        )
        await self._consumer.start()
        tps = []
        for name in self.topics:
            parts: set[int] | None = None
            for _ in range(50):
                parts = self._consumer.partitions_for_topic(name)
                if parts:
                    break
                await self._consumer.topics()  # refresh metadata
                await asyncio.sleep(0.1)
            tps += [TopicPartition(name, p) for p in parts or ()]
        self._consumer.assign(tps)
        await self._consumer.seek_to_beginning(*tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._consumer is not None
        await self._consumer.stop()

    async def poll(self, timeout_s: float = 0.2) -> None:
        assert self._consumer is not None
        batch = await self._consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=5000)
        for tp, records in batch.items():
            for r in records:
                try:
                    self.messages.append((tp.topic, msgspec.json.decode(r.value)))
                except msgspec.DecodeError:
                    self.messages.append((tp.topic, {"raw": r.value}))

    async def wait_for(
        self, predicate: Any, timeout_s: float = 60.0
    ) -> list[tuple[str, dict[str, Any]]]:
        """Poll until ``predicate(messages)`` is true; returns the messages."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.messages):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; saw {len(self.messages)} messages")
            await self.poll()
        return self.messages


def decided(
    messages: list[tuple[str, dict[str, Any]]], order_ids: set[str]
) -> dict[str, list[str]]:
    """order id -> topics of its outcome messages (confirmed / rejected), in arrival order."""
    out: dict[str, list[str]] = {}
    for name, doc in messages:
        oid = doc.get("order_id")
        if oid in order_ids:
            out.setdefault(oid, []).append(name.rpartition(".")[2])
    return out
