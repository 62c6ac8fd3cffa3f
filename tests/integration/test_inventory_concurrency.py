"""Concurrency is tested, not assumed: buyers racing on the real Redis Cluster."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from core.errors import SeatUnavailable
from core.holds import Hold
from core.inventory import Inventory, partition_keys
from core.settings import HoldSettings
from tests.conftest import fresh_event_id

pytestmark = pytest.mark.slow

SETTINGS = HoldSettings(ttl_s=120, max_seats_per_buyer=6, max_seats_per_hold=6)


def startup_nodes(services: dict[str, str]) -> list[ClusterNode]:
    return [
        ClusterNode(host, int(port))
        for host, _, port in (
            n.rpartition(":") for n in services["TB_REDIS_CLUSTER_NODES"].split(",")
        )
    ]


async def test_500_buyers_on_separate_connections_race_for_one_seat(
    services: dict[str, str], redis_cluster: RedisCluster
) -> None:
    event = fresh_event_id()
    await Inventory(redis_cluster, SETTINGS).load(event, 0, [("1-A-1", "GENERAL")])
    nodes = startup_nodes(services)
    # One client (its own connection pool, so its own connection) per buyer.
    clients = [RedisCluster(startup_nodes=nodes, max_connections=1) for _ in range(500)]
    try:
        for i in range(0, len(clients), 50):
            await asyncio.gather(*(c.initialize() for c in clients[i : i + 50]))
        buyers = [Inventory(c, SETTINGS) for c in clients]
        await buyers[0].load_scripts()
        start = asyncio.Event()

        async def buy(i: int) -> Hold | None:
            await start.wait()
            try:
                return await buyers[i].hold(event, ["1-A-1"], f"buyer-{i}")
            except SeatUnavailable:
                return None

        tasks = [asyncio.create_task(buy(i)) for i in range(500)]
        await asyncio.sleep(0.05)
        start.set()
        results = await asyncio.gather(*tasks)
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))

    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    state = await redis_cluster.hgetall(partition_keys(event, 0)[5])
    assert state[b"1-A-1"].endswith(winners[0].hold_id.encode())


async def test_1000_buyers_with_overlapping_requests_never_share_a_seat(
    redis_cluster: RedisCluster,
) -> None:
    event = fresh_event_id()
    seats = [f"5-{row}-{n}" for row in "ABCDEFGHIJ" for n in range(1, 21)]  # 200 seats
    inventory = Inventory(redis_cluster, SETTINGS)
    await inventory.load(event, 0, [(s, "GENERAL") for s in seats])
    rng = random.Random(20261128)
    requests = []
    for _ in range(1000):
        # Adjacent-ish picks in a random row window: plenty of overlap.
        row = rng.choice("ABCDEFGHIJ")
        first = rng.randint(1, 17)
        wanted = rng.sample(range(first, min(first + 6, 21)), rng.randint(1, 4))
        requests.append([f"5-{row}-{n}" for n in wanted])
    start = asyncio.Event()

    async def buy(i: int) -> Hold | None:
        await start.wait()
        try:
            return await inventory.hold(event, requests[i], f"buyer-{i}")
        except SeatUnavailable:
            return None

    tasks = [asyncio.create_task(buy(i)) for i in range(1000)]
    await asyncio.sleep(0.05)
    start.set()
    results = await asyncio.gather(*tasks)

    holds = [h for h in results if h is not None]
    assert holds, "some requests must win"
    # Every hold got exactly the seats it asked for: all or none.
    for i, hold in enumerate(results):
        if hold is not None:
            assert hold.seats == requests[i]
    # No seat is in two live holds.
    per_seat = Counter(seat for hold in holds for seat in hold.seats)
    assert max(per_seat.values()) == 1
    # Redis agrees: every held seat points at the hold that won it, and nothing else is held.
    state = await redis_cluster.hgetall(partition_keys(event, 0)[5])
    owner = {seat: hold.hold_id for hold in holds for seat in hold.seats}
    assert {k.decode(): v.decode().rpartition("|")[2] for k, v in state.items()} == owner
    free = await inventory.availability(event)
    assert free == {"GENERAL": 200 - len(owner)}


async def test_300_buyers_for_50_seats_best_available_gives_exactly_50(
    redis_cluster: RedisCluster,
) -> None:
    event = fresh_event_id()
    inventory = Inventory(redis_cluster, SETTINGS)
    await inventory.load(event, 0, [(f"8-{r}-{n}", "VIP") for r in "ABCDE" for n in range(1, 11)])
    start = asyncio.Event()

    async def buy(i: int) -> Hold | None:
        await start.wait()
        try:
            return await inventory.hold_best(event, "VIP", 1, f"buyer-{i}")
        except SeatUnavailable:
            return None

    tasks = [asyncio.create_task(buy(i)) for i in range(300)]
    await asyncio.sleep(0.05)
    start.set()
    holds = [h for h in await asyncio.gather(*tasks) if h is not None]
    assert len(holds) == 50
    assert len({seat for h in holds for seat in h.seats}) == 50
    assert await inventory.availability(event) == {"VIP": 0}
