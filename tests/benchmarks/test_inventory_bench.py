"""pytest-benchmark: inventory operations on the real Redis Cluster (one round trip each).

Marked ``bench``; nothing is asserted about time (figures go to docs/BENCHMARKS.md).
Each benchmark checks its result, so a broken operation cannot pass as a fast one.
With ``--benchmark-disable`` (the default in pyproject) each runs once as a test.

Run: ``uv run pytest tests/benchmarks/test_inventory_bench.py --benchmark-enable -q``
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from core.holds import Hold
from core.inventory import Inventory
from core.settings import HoldSettings
from tests.conftest import fresh_event_id

pytestmark = pytest.mark.bench

T = TypeVar("T")
SETTINGS = HoldSettings(ttl_s=600, max_seats_per_buyer=6, max_seats_per_hold=6)
ROUNDS = 300


class Loop:
    """A private event loop: pytest-benchmark calls plain functions."""

    def __init__(self, services: dict[str, str]) -> None:
        self.loop = asyncio.new_event_loop()
        nodes = [
            ClusterNode(host, int(port))
            for host, _, port in (
                n.rpartition(":") for n in services["TB_REDIS_CLUSTER_NODES"].split(",")
            )
        ]
        self.client = RedisCluster(startup_nodes=nodes)
        self.run(self.client.initialize())
        self.inventory = Inventory(self.client, SETTINGS)
        self.run(self.inventory.load_scripts())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.run(self.client.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def loop(services: dict[str, str]) -> Iterator[Loop]:
    env = Loop(services)
    yield env
    env.close()


def stadium(rows: int, per_row: int, category: str = "GENERAL") -> list[tuple[str, str]]:
    return [
        (f"S{r // 40}-{r % 40}-{n}", category) for r in range(rows) for n in range(1, per_row + 1)
    ]


def test_bench_hold_two_seats(benchmark: Any, loop: Loop) -> None:
    event = fresh_event_id()
    loop.run(loop.inventory.load(event, 0, stadium(rows=40, per_row=50)))
    pairs = ([f"S0-{r}-{n}", f"S0-{r}-{n + 1}"] for r in range(40) for n in range(1, 50, 2))
    buyers = (f"buyer-{i}" for i in itertools.count())

    def setup() -> tuple[tuple[list[str], str], dict[str, Any]]:
        return (next(pairs), next(buyers)), {}

    def hold(seats: list[str], buyer: str) -> Hold:
        return loop.run(loop.inventory.hold(event, seats, buyer))

    result = benchmark.pedantic(hold, setup=setup, rounds=ROUNDS, iterations=1)
    assert len(result.seats) == 2


def test_bench_confirm(benchmark: Any, loop: Loop) -> None:
    event = fresh_event_id()
    loop.run(loop.inventory.load(event, 0, stadium(rows=40, per_row=50)))
    seats = (f"S0-{r}-{n}" for r in range(40) for n in range(1, 51))

    def setup() -> tuple[tuple[str, str], dict[str, Any]]:
        buyer = f"buyer-{uuid.uuid4().hex[:8]}"
        hold = loop.run(loop.inventory.hold(event, [next(seats)], buyer))
        return (hold.hold_id, buyer), {}

    def confirm(hold_id: str, buyer: str) -> Any:
        return loop.run(loop.inventory.confirm(hold_id, buyer, str(uuid.uuid4())))

    result = benchmark.pedantic(confirm, setup=setup, rounds=ROUNDS, iterations=1)
    assert len(result.seats) == 1


def test_bench_best_available_in_a_half_full_20000_seat_category(
    benchmark: Any, loop: Loop
) -> None:
    # 200 rows x 100 seats; the front 100 rows sold: the script skips them by counter.
    event = fresh_event_id()
    layout = stadium(rows=200, per_row=100)
    sold = {seat: str(uuid.UUID(int=i + 1)) for i, (seat, _) in enumerate(layout[:10_000])}
    loop.run(loop.inventory.load(event, 0, layout, sold))
    buyers = (f"buyer-{i}" for i in itertools.count())

    def setup() -> tuple[tuple[str], dict[str, Any]]:
        return (next(buyers),), {}

    def best(buyer: str) -> Hold:
        return loop.run(loop.inventory.hold_best(event, "GENERAL", 4, buyer))

    result = benchmark.pedantic(best, setup=setup, rounds=ROUNDS, iterations=1)
    assert len(result.seats) == 4


def test_bench_seat_statuses_of_a_20000_seat_event(benchmark: Any, loop: Loop) -> None:
    event = fresh_event_id()
    layout = stadium(rows=200, per_row=100)
    sold = {seat: str(uuid.UUID(int=i + 1)) for i, (seat, _) in enumerate(layout[::2])}
    loop.run(loop.inventory.load(event, 0, layout, sold))
    version, statuses = benchmark.pedantic(
        lambda: loop.run(loop.inventory.seat_statuses(event)), rounds=20, iterations=1
    )
    assert len(statuses) == 10_000 and version


def test_bench_load_an_80000_seat_partition(benchmark: Any, loop: Loop) -> None:
    event = fresh_event_id()
    layout = stadium(rows=800, per_row=100)
    result = benchmark.pedantic(
        lambda: loop.run(loop.inventory.load(event, 0, layout)), rounds=3, iterations=1
    )
    assert result.seats == 80_000
