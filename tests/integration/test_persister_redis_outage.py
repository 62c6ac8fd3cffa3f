"""The persister does not wait on Redis (issue 20.3).

PostgreSQL is the arbiter of what was sold. While the Redis inventory cannot be reached, a
batch is still committed to PostgreSQL and its Kafka offsets are committed, so the other
events of those partitions keep flowing; Redis hears of the decisions once it answers
again. The real broker, PostgreSQL and Redis Cluster; Redis is "away" by reaching it
through a script link to a loopback port where nothing listens.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from core.errors import Unavailable
from core.inventory import Inventory, partition_keys
from core.inventory_link import ScriptLink
from core.orders import encode, event_key, topic
from core.settings import Settings
from tests.conftest import fresh_event_id
from tests.integration.api_servers import free_port, with_overrides
from tests.integration.catalog_seed import cluster_client
from tests.integration.test_orders_support import (
    create_catalog_event,
    order_placed,
    produce,
    seat_ids,
)
from workers import metrics
from workers.persister import create_persister
from workers.runtime import ensure_topics

ORDERS = 10


class RedisAway:
    """The real inventory; while ``away`` it is reached through a link to a closed port."""

    def __init__(self, inventory: Inventory, client: Any) -> None:
        self.inventory = inventory
        self.unreachable = Inventory(client, link=ScriptLink([("127.0.0.1", free_port())]))
        self.away = True
        self.refused = 0

    async def _call(self, name: str, *args: Any) -> Sequence[Any]:
        if not self.away:
            return await getattr(self.inventory, name)(*args)  # type: ignore[no-any-return]
        try:
            return await getattr(self.unreachable, name)(*args)  # type: ignore[no-any-return]
        except Unavailable:
            self.refused += 1
            raise

    async def mark_sold_many(
        self, event_id: int, partition: int, orders: Sequence[tuple[str, Sequence[str], str]]
    ) -> Sequence[Any]:
        return await self._call("mark_sold_many", event_id, partition, orders)

    async def reject_many(
        self, event_id: int, partition: int, order_ids: Sequence[str]
    ) -> Sequence[Any]:
        return await self._call("reject_many", event_id, partition, order_ids)


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.1)


async def committed(bootstrap: str, group: str, name: str) -> int:
    """The group's committed offsets on topic ``name``, summed over its partitions.

    Read by a consumer of that group that never subscribes (it joins nothing, so it
    takes no partition from the persister)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        await consumer.topics()  # metadata, so that the topic's partitions are known
        total = 0
        for partition in consumer.partitions_for_topic(name) or ():
            offset = await consumer.committed(TopicPartition(name, partition))
            total += max(0, offset or 0)
        return total
    finally:
        await consumer.stop()


async def test_batches_commit_while_redis_is_away_and_redis_catches_up(
    db_settings: Settings, pg_dsn: str, services: dict[str, str]
) -> None:
    prefix = f"{db_settings.kafka.topic_prefix}redisaway{os.getpid()}."
    settings = with_overrides(
        db_settings, kafka={"topic_prefix": prefix}, workers={"persister_port": 0}
    )
    await ensure_topics(settings)
    event_id = fresh_event_id()
    seats = seat_ids(2 * ORDERS)
    await create_catalog_event(pg_dsn, event_id, seats)
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    inventory = Inventory(redis)
    await inventory.load(event_id, 0, [(s, "GENERAL") for s in seats])
    # Accepted orders, as the API leaves them: their seats sold-pending in Redis.
    orders = []
    for i in range(0, len(seats), 2):
        buyer = f"away-{i}"
        hold = await inventory.hold(event_id, seats[i : i + 2], buyer)
        order_id = str(uuid.uuid4())
        await inventory.confirm(hold.hold_id, buyer, order_id)
        orders.append(order_placed(event_id, seats[i : i + 2], buyer=buyer, order_id=order_id))

    async def statuses() -> set[str]:
        _, found = await inventory.seat_statuses(event_id)
        return {found.get(s, "free") for s in seats}

    ledger = RedisAway(inventory, redis)
    app = create_persister(settings, ledger=ledger)
    conn = await asyncpg.connect(pg_dsn)
    placed = topic(prefix, "orders.placed")
    try:
        await app.start()
        await produce(
            settings.kafka.bootstrap, placed, [(event_key(o.event_id), encode(o)) for o in orders]
        )

        async def all_confirmed() -> bool:
            n = await conn.fetchval(
                "SELECT count(*) FROM orders.orders WHERE event_id = $1 AND status = 'confirmed'",
                event_id,
            )
            return bool(n == ORDERS)

        async def offsets_committed() -> bool:
            group = f"{prefix}persister"
            return await committed(settings.kafka.bootstrap, group, placed) == ORDERS

        # PostgreSQL decides and the offsets move on, though Redis cannot be reached.
        await until(all_confirmed, "the orders confirmed in PostgreSQL")
        await until(offsets_committed, "the batch's offsets committed")
        assert ledger.refused > 0
        assert await statuses() == {"pending"}  # Redis has not heard yet
        backlog = metrics.REGISTRY.get_sample_value("ticketbuster_persister_redis_backlog")
        assert backlog == ORDERS

        ledger.away = False  # Redis is back: the backlog reaches it without a redelivery

        async def all_sold() -> bool:
            return await statuses() == {"sold"}

        await until(all_sold, "the seats sold in Redis")
        assert metrics.REGISTRY.get_sample_value("ticketbuster_persister_redis_backlog") == 0
        tickets = await conn.fetchval(
            "SELECT count(*) FROM orders.tickets WHERE event_id = $1", event_id
        )
        assert tickets == len(seats)
    finally:
        await app.stop()
        await conn.close()
        for key in partition_keys(event_id, 0):
            await redis.delete(key)
        await redis.aclose()
