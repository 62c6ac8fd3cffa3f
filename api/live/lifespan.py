"""Start and stop the live hub with the app (listed in ``api.app``'s lifespans).

Runs inside the app's main lifespan, so the shared Redis client, the inventory
and the token verifier are already in ``app.state``. The hub's stream tailers get
a Redis Cluster client of their own: each blocked ``XREAD`` holds a connection,
and those must never starve the inventory's pool.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from litestar import Litestar
from redis.asyncio.cluster import ClusterNode, RedisCluster

from api.live.hub import HoldLookup, LiveHub, PartitionLookup, running
from api.live.queue_push import QueuePush
from api.queue.service import queue_service
from core.errors import DomainError, Unavailable
from core.inventory import partition_tag
from core.settings import Settings


def partition_lookup(redis: RedisCluster, inventory: Any) -> PartitionLookup:
    """An event exists for the live map when its inventory is loaded in Redis."""

    async def partitions(event_id: int) -> int | None:
        count = inventory.plan(event_id).count if inventory is not None else 1
        for p in range(count):
            if await redis.exists(f"{partition_tag(event_id, p)}:seats"):
                return int(count)
        return None

    return partitions


def hold_lookup(inventory: Any) -> HoldLookup | None:
    """(event_id, expires_at) of the buyer's live hold, through the inventory's owner check."""
    if inventory is None:
        return None

    async def lookup(hold_id: str, buyer: str) -> tuple[int, int] | None:
        try:
            hold = await inventory.get_hold(hold_id, buyer)
        except Unavailable:
            raise  # Redis is away: not the same as "no such hold"
        except DomainError:
            return None  # not found, not the buyer's, expired, malformed: all the same
        return int(hold.event_id), int(hold.expires_at)

    return lookup


def tail_client(settings: Settings) -> RedisCluster:
    live = settings.live
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in settings.redis.startup_nodes()],
        decode_responses=False,
        # One connection per blocked XREAD, per node: at most every tailed partition.
        max_connections=live.max_partitions + 8,
        socket_timeout=live.block_ms / 1000 + settings.redis.socket_timeout_s,
        socket_connect_timeout=settings.redis.socket_timeout_s,
    )


@contextlib.asynccontextmanager
async def live_lifespan(app: Litestar) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    redis: RedisCluster = app.state.redis
    inventory = getattr(app.state, "inventory", None)
    tail = tail_client(settings)
    hub = LiveHub(
        settings.live,
        redis,
        tail,
        partitions=partition_lookup(redis, inventory),
        holds=hold_lookup(inventory),
        queue=QueuePush(lambda: queue_service(app.state)),
    )
    try:
        async with running(hub):
            app.state.live_hub = hub
            yield
    finally:
        app.state.live_hub = None
        await tail.aclose()
