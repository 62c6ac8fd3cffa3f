"""api/catalog/service.py without I/O: caching, single flight and seat-map merging, with an
in-memory repository and inventory (the real ones are exercised in
tests/integration/test_catalog_api.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from api.catalog.repository import LayoutRun, LayoutSection
from api.catalog.service import MAX_CACHE_ENTRIES, NEGATIVE_TTL_S, STALE_IF_ERROR_S, Catalog
from core.errors import InvalidInput, NotFound, Unavailable
from core.events import PriceCategory, SeatMap, plan_seat_map, price_categories

EVENT = 7


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Repository:
    """The queries the Catalog makes, counted."""

    def __init__(self, capacity: int = 300) -> None:
        plan = plan_seat_map(capacity)
        self.sections = [
            LayoutSection(
                s.code, s.name, 0, [LayoutRun(r.label, 1, r.seats, s.category) for r in s.rows]
            )
            for s in plan
        ]
        self.calls: dict[str, int] = {}
        self.delay = 0.0

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    async def price_categories(self, event_ids: list[int]) -> dict[int, list[PriceCategory]]:
        self._count("prices")
        await asyncio.sleep(self.delay)
        return {e: price_categories(5000) if e == EVENT else [] for e in event_ids}

    async def event(self, event_id: int) -> Any:
        self._count("event")
        return object() if event_id == EVENT else None

    async def layout(self, event_id: int) -> list[LayoutSection]:
        self._count("layout")
        await asyncio.sleep(self.delay)
        return self.sections


class Inventory:
    def __init__(self) -> None:
        self.version = "1-0"
        self.statuses: dict[str, str] = {}
        self.calls = 0
        self.delay = 0.0

    async def availability(self, event_id: int) -> dict[str, int]:
        return {}

    async def seat_statuses(self, event_id: int) -> tuple[str, dict[str, str]]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return self.version, dict(self.statuses)


class Streams:
    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory
        self.calls = 0

    async def xrevrange(
        self, name: str, max: str = "+", min: str = "-", count: int | None = None
    ) -> Any:
        self.calls += 1
        assert name == f"{{ev:{EVENT}:0}}:stream"
        return [(self.inventory.version.encode(), {})]


def make(*, streams: bool = True) -> tuple[Catalog, Repository, Inventory, Streams | None, Clock]:
    repo, inventory, clock = Repository(), Inventory(), Clock()
    reader = Streams(inventory) if streams else None
    catalog = Catalog(repo, inventory, streams=reader, clock=clock)  # type: ignore[arg-type]
    return catalog, repo, inventory, reader, clock


def status_of(seat_map: SeatMap, seat: str) -> str:
    section, row, number = seat.split("-")
    for sec in seat_map.sections:
        for run in sec.rows:
            if sec.code == section and run.row == row:
                offset = int(number) - run.first
                if 0 <= offset < len(run.status):
                    return run.status[offset]
    raise AssertionError(seat)


async def test_prices_are_cached_for_their_ttl() -> None:
    catalog, repo, *_, clock = make()
    assert await catalog.price_minor(EVENT, "VIP") == 10000
    assert await catalog.price_minor(EVENT, "GENERAL") == 5000
    assert repo.calls["prices"] == 1
    clock.now += 61
    assert await catalog.price_minor(EVENT, "PLATINUM") == 7500
    assert repo.calls["prices"] == 2


async def test_unknown_event_and_category() -> None:
    catalog, repo, *_, clock = make()
    with pytest.raises(InvalidInput) as info:
        await catalog.price_minor(EVENT, "BALCONY")
    assert info.value.extra == {"field": "category"}
    for _ in range(3):
        with pytest.raises(NotFound):
            await catalog.price_minor(99, "VIP")
    assert repo.calls["prices"] == 2  # the unknown id is remembered...
    clock.now += NEGATIVE_TTL_S + 0.1
    with pytest.raises(NotFound):
        await catalog.price_minor(99, "VIP")
    assert repo.calls["prices"] == 3  # ...only briefly
    for bad in (0, -1, 2**63):
        with pytest.raises(NotFound):
            await catalog.prices(bad)
    assert repo.calls["prices"] == 3


async def test_cache_stays_bounded_under_unknown_ids() -> None:
    catalog, *_ = make()
    for event_id in range(1000, 1000 + MAX_CACHE_ENTRIES + 50):
        with pytest.raises(NotFound):
            await catalog.prices(event_id)
    assert len(catalog._cache) <= MAX_CACHE_ENTRIES


async def test_concurrent_seat_maps_share_one_load() -> None:
    catalog, repo, inventory, *_ = make()
    repo.delay = inventory.delay = 0.01
    maps = await asyncio.gather(*(catalog.seat_map(EVENT) for _ in range(50)))
    assert len({m.etag for m in maps}) == 1
    assert repo.calls["layout"] == 1
    assert inventory.calls == 1


async def test_a_cancelled_caller_does_not_fail_the_others() -> None:
    catalog, repo, *_ = make()
    repo.delay = 0.05
    first = asyncio.ensure_future(catalog.seat_map(EVENT))
    second = asyncio.ensure_future(catalog.seat_map(EVENT))
    await asyncio.sleep(0.01)
    first.cancel()
    rendered = await second
    assert rendered.version == "1-0"
    assert first.cancelled()


async def test_seat_map_merges_live_statuses() -> None:
    catalog, _, inventory, *_ = make()
    inventory.statuses = {
        "101-A-1": "held",
        "201-B-3": "sold",
        "301-C-20": "pending",
        "999-Z-1": "sold",  # not in the layout: ignored
        "101-A-99": "sold",  # past the row's end: ignored
    }
    rendered = await catalog.seat_map(EVENT)
    seat_map = msgspec.json.decode(rendered.body, type=SeatMap)
    assert status_of(seat_map, "101-A-1") == "h"
    assert status_of(seat_map, "201-B-3") == "s"
    assert status_of(seat_map, "301-C-20") == "p"
    assert status_of(seat_map, "101-A-2") == "f"
    all_status = "".join(run.status for sec in seat_map.sections for run in sec.rows)
    assert len(all_status) == 300
    assert sorted(all_status.replace("f", "")) == ["h", "p", "s"]
    assert [c.code for c in seat_map.categories] == ["VIP", "PLATINUM", "GENERAL"]


async def test_unchanged_version_serves_the_cached_rendering() -> None:
    catalog, _, inventory, streams, clock = make()
    first = await catalog.seat_map(EVENT)
    again = await catalog.seat_map(EVENT)
    assert again is first
    assert inventory.calls == 1
    assert streams is not None and streams.calls == 1

    inventory.version = "2-0"
    inventory.statuses = {"101-A-1": "sold"}
    changed = await catalog.seat_map(EVENT)
    assert changed.etag != first.etag and changed.version == "2-0"
    assert inventory.calls == 2

    # Bounded staleness: after SEAT_MAP_MAX_AGE_S the statuses are read again even if
    # the version did not move (a hold that expired lazily).
    clock.now += 6
    inventory.statuses = {}
    fresh = await catalog.seat_map(EVENT)
    assert inventory.calls == 3
    assert status_of(msgspec.json.decode(fresh.body, type=SeatMap), "101-A-1") == "f"
    assert fresh.etag != changed.etag  # same version, other content: other tag


async def test_without_a_stream_reader_every_request_reads_the_statuses() -> None:
    catalog, _, inventory, *_ = make(streams=False)
    first = await catalog.seat_map(EVENT)
    second = await catalog.seat_map(EVENT)
    assert inventory.calls == 2
    assert second.etag == first.etag


async def test_seat_map_of_unknown_event_is_not_found() -> None:
    catalog, repo, *_ = make()
    with pytest.raises(NotFound):
        await catalog.seat_map(12345)
    assert "layout" not in repo.calls


async def test_event_records_are_cached_briefly() -> None:
    catalog, repo, _, _, clock = make()
    for _ in range(5):
        await catalog._record(EVENT)
    assert repo.calls["event"] == 1
    clock.now += 11
    await catalog._record(EVENT)
    assert repo.calls["event"] == 2


async def test_seat_map_of_an_event_without_inventory_is_unavailable() -> None:
    catalog, _, inventory, *_ = make()
    inventory.version = "0-0"
    with pytest.raises(Unavailable):
        await catalog.seat_map(EVENT)


async def test_an_expired_entry_is_served_while_postgres_is_unreachable() -> None:
    """A PostgreSQL restart must not stop holds: the event and prices a process already
    knows stay usable (for a bounded time) while reloading them fails."""
    catalog, repo, *_, clock = make()
    assert await catalog.price_minor(EVENT, "VIP") == 10000

    async def down(event_ids: list[int]) -> Any:
        repo._count("prices")
        raise Unavailable("PostgreSQL is unavailable (circuit open); retry shortly")

    repo.price_categories = down  # type: ignore[method-assign]
    clock.now += 61  # expired
    assert await catalog.price_minor(EVENT, "VIP") == 10000
    calls = repo.calls["prices"]
    # While it stays down, a reload is tried about once a second, not on every call.
    assert await catalog.price_minor(EVENT, "VIP") == 10000
    assert repo.calls["prices"] == calls
    clock.now += 1.5
    assert await catalog.price_minor(EVENT, "VIP") == 10000
    assert repo.calls["prices"] == calls + 1
    # Not forever: past the stale bound the outage is the answer.
    clock.now += STALE_IF_ERROR_S
    with pytest.raises(Unavailable):
        await catalog.price_minor(EVENT, "VIP")
