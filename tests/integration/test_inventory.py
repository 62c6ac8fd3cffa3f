"""The seat inventory on the real Redis Cluster: holds, expiry, ownership, orders, deltas."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from core.errors import (
    Conflict,
    HoldExpired,
    InvalidInput,
    LimitExceeded,
    NotFound,
    NotOwner,
    SeatUnavailable,
    Unavailable,
)
from core.inventory import Inventory, PartitionPlan, partition_keys
from core.seats import version_key
from core.settings import HoldSettings
from tests.conftest import fresh_event_id

SETTINGS = HoldSettings(ttl_s=60, max_lifetime_factor=2.0, max_seats_per_buyer=6)


def layout(rows: str = "ABC", per_row: int = 10, section: str = "101") -> list[tuple[str, str]]:
    """Rows front to back: the first row VIP, the rest GENERAL."""
    return [
        (f"{section}-{row}-{n}", "VIP" if i == 0 else "GENERAL")
        for i, row in enumerate(rows)
        for n in range(1, per_row + 1)
    ]


@pytest.fixture
async def inventory(redis_cluster: RedisCluster) -> Inventory:
    return Inventory(redis_cluster, SETTINGS)


@pytest.fixture
async def event(inventory: Inventory) -> int:
    event_id = fresh_event_id()
    await inventory.load(event_id, 0, layout())
    return event_id


def order() -> str:
    return str(uuid.uuid4())


async def server_ms(client: RedisCluster) -> int:
    secs, micros = await client.time()
    return int(secs) * 1000 + int(micros) // 1000


async def wait_past(client: RedisCluster, ms: int) -> None:
    """Sleep until Redis server time is past ``ms``."""
    while (now := await server_ms(client)) <= ms:
        await asyncio.sleep((ms - now + 5) / 1000)


# -- hold -------------------------------------------------------------------------------------


async def test_hold_returns_seats_categories_and_server_expiry(
    inventory: Inventory, event: int, redis_cluster: RedisCluster
) -> None:
    before = await server_ms(redis_cluster)
    hold = await inventory.hold(event, ["101-A-1", "101-B-1"], "alice")
    assert hold.seats == ["101-A-1", "101-B-1"]
    assert hold.categories == {"101-A-1": "VIP", "101-B-1": "GENERAL"}
    assert hold.hold_id.startswith(f"h{event}.0.")
    assert before <= hold.created_at <= await server_ms(redis_cluster)
    assert hold.expires_at == hold.created_at + 60_000
    assert hold.max_expires_at == hold.created_at + 120_000
    assert await inventory.get_hold(hold.hold_id, "alice") == hold


async def test_hold_is_all_or_nothing_and_names_taken_seats(
    inventory: Inventory, event: int
) -> None:
    await inventory.hold(event, ["101-A-2"], "alice")
    with pytest.raises(SeatUnavailable) as err:
        await inventory.hold(event, ["101-A-1", "101-A-2", "101-A-3"], "bob")
    assert err.value.extra["seats"] == ["101-A-2"]
    # were not taken by the failed request.
    hold = await inventory.hold(event, ["101-A-1", "101-A-3"], "carol")
    assert hold.seats == ["101-A-1", "101-A-3"]


async def test_unknown_seats_are_an_error_not_a_hold(inventory: Inventory, event: int) -> None:
    with pytest.raises(InvalidInput) as err:
        await inventory.hold(event, ["101-A-1", "101-Z-1", "999-A-1"], "alice")
    assert err.value.extra["seats"] == ["101-Z-1", "999-A-1"]
    _, statuses = await inventory.seat_statuses(event)
    assert statuses == {}


@pytest.mark.parametrize(
    ("seats", "ttl"),
    [
        ([], None),
        (["101-A-1"] * 2, None),
        ([f"101-A-{n}" for n in range(1, 8)], None),  # more than max_seats_per_hold
        (["101-A-01"], None),
        (["101_A_1"], None),
        ("101-A-1", None),
        (["101-A-1"], 0),
        (["101-A-1"], 61),
        (["101-A-1"], -5),
    ],
)
async def test_bad_input_is_rejected_before_redis(seats: object, ttl: float | None) -> None:
    # A client that points nowhere: validation must fail first.
    dead = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", 1)])
    inventory = Inventory(dead, SETTINGS)
    with pytest.raises(InvalidInput):
        await inventory.hold(fresh_event_id(), seats, "alice", ttl_s=ttl)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "hold_id", ["", "h1.0.xyz", "h0.0.0123456789abcdef", "x1.0.0123456789abcdef"]
)
async def test_malformed_hold_ids_are_invalid_input(inventory: Inventory, hold_id: str) -> None:
    with pytest.raises(InvalidInput):
        await inventory.extend(hold_id, "alice")
    with pytest.raises(InvalidInput):
        await inventory.confirm(hold_id, "alice", order())


async def test_redis_down_is_unavailable_not_a_raw_error() -> None:
    dead = RedisCluster(startup_nodes=[ClusterNode("127.0.0.1", 1)], socket_timeout=0.5)
    inventory = Inventory(dead, SETTINGS)
    with pytest.raises(Unavailable):
        await inventory.hold(fresh_event_id(), ["101-A-1"], "alice")
    with pytest.raises(Unavailable):
        await inventory.seat_statuses(fresh_event_id())


async def test_an_event_not_loaded_is_unavailable_not_unknown_seats(inventory: Inventory) -> None:
    event = fresh_event_id()
    with pytest.raises(Unavailable) as err:
        await inventory.hold(event, ["101-A-1"], "alice")
    assert err.value.retry_after_s > 0
    with pytest.raises(Unavailable):
        await inventory.hold_best(event, "VIP", 2, "alice")
    assert await inventory.availability(event) == {}


async def test_per_buyer_limit_counts_holds_pending_and_sold(
    inventory: Inventory, event: int
) -> None:
    first = await inventory.hold(event, ["101-A-1", "101-A-2"], "alice")
    await inventory.confirm(first.hold_id, "alice", order())  # 2 pending
    second = await inventory.hold(event, ["101-A-3", "101-A-4"], "alice")  # 2 held
    sold = await inventory.confirm(second.hold_id, "alice", order())
    await inventory.mark_sold(event, 0, sold.order_id)  # 2 sold
    await inventory.hold(event, ["101-B-1", "101-B-2"], "alice")  # 6 in all
    with pytest.raises(LimitExceeded) as err:
        await inventory.hold(event, ["101-B-3"], "alice")
    assert err.value.extra == {"limit": 6, "used": 6}
    with pytest.raises(LimitExceeded):
        await inventory.hold_best(event, "GENERAL", 1, "alice")
    assert await inventory.buyer_usage(event, "alice") == 6
    # Someone else is not affected.
    await inventory.hold(event, ["101-B-3"], "bob")


async def test_expired_holds_free_their_seats_and_stop_counting(
    inventory: Inventory, event: int, redis_cluster: RedisCluster
) -> None:
    hold = await inventory.hold(
        event, ["101-A-1"] + [f"101-B-{n}" for n in range(1, 6)], "alice", ttl_s=0.2
    )
    with pytest.raises(SeatUnavailable):
        await inventory.hold(event, ["101-A-1"], "bob")
    await wait_past(redis_cluster, hold.expires_at)
    # Lazy expiry: free for everyone, and no longer counted against alice's limit.
    assert (await inventory.seat_statuses(event))[1] == {}
    assert (await inventory.availability(event)) == {"VIP": 10, "GENERAL": 20}
    bob = await inventory.hold(event, ["101-A-1"], "bob")
    assert bob.seats == ["101-A-1"]
    await inventory.hold(event, [f"101-C-{n}" for n in range(1, 7)], "alice")
    with pytest.raises(HoldExpired):
        await inventory.get_hold(hold.hold_id, "alice")


async def test_sweep_releases_expired_holds_with_deltas(
    inventory: Inventory, event: int, redis_cluster: RedisCluster
) -> None:
    start = (await inventory.seat_statuses(event))[0]
    a = await inventory.hold(event, ["101-A-1", "101-A-2"], "alice", ttl_s=0.2)
    b = await inventory.hold(event, ["101-B-1"], "bob", ttl_s=0.2)
    keep = await inventory.hold(event, ["101-C-1"], "carol")
    await wait_past(redis_cluster, max(a.expires_at, b.expires_at))
    assert await inventory.sweep(event, 0) == 2
    assert await inventory.sweep(event, 0) == 0
    batch = await inventory.read_deltas(event, 0, start)
    assert batch.complete
    frees = [d for d in batch.deltas if d.op == "expire"]
    assert sorted(tuple(d.seats) for d in frees) == [("101-A-1", "101-A-2"), ("101-B-1",)]
    assert all(d.status == "free" for d in frees)
    assert (await inventory.seat_statuses(event))[1] == {"101-C-1": "held"}
    # A swept hold still answers "expired", not "unknown".
    with pytest.raises(HoldExpired):
        await inventory.confirm(a.hold_id, "alice", order())
    await inventory.release(keep.hold_id, "carol")


# -- extend, release, ownership -----------------------------------------------------------


async def test_extend_is_capped_at_the_total_lifetime(
    redis_cluster: RedisCluster,
) -> None:
    inventory = Inventory(redis_cluster, HoldSettings(ttl_s=1, max_lifetime_factor=2.0))
    event = fresh_event_id()
    await inventory.load(event, 0, layout())
    hold = await inventory.hold(event, ["101-A-1"], "alice", ttl_s=0.4)
    assert hold.max_expires_at == hold.created_at + 800
    await asyncio.sleep(0.25)
    extended = await inventory.extend(hold.hold_id, "alice")
    assert hold.expires_at < extended.expires_at <= hold.max_expires_at
    await asyncio.sleep(0.25)
    again = await inventory.extend(hold.hold_id, "alice")
    assert again.expires_at == hold.max_expires_at  # capped, not now + ttl
    await wait_past(redis_cluster, hold.max_expires_at)
    with pytest.raises(HoldExpired):
        await inventory.extend(hold.hold_id, "alice")


async def test_only_the_owner_may_extend_release_or_confirm(
    inventory: Inventory, event: int
) -> None:
    hold = await inventory.hold(event, ["101-A-1"], "alice")
    with pytest.raises(NotOwner):
        await inventory.extend(hold.hold_id, "mallory")
    with pytest.raises(NotOwner):
        await inventory.release(hold.hold_id, "mallory")
    with pytest.raises(NotOwner):
        await inventory.confirm(hold.hold_id, "mallory", order())
    with pytest.raises(NotOwner):
        await inventory.get_hold(hold.hold_id, "mallory")
    # NotOwner is answered like a missing hold (404).
    assert NotOwner.status == NotFound.status == 404
    assert (await inventory.seat_statuses(event))[1] == {"101-A-1": "held"}
    await inventory.release(hold.hold_id, "alice")
    assert (await inventory.seat_statuses(event))[1] == {}
    with pytest.raises(NotFound):
        await inventory.release(hold.hold_id, "alice")
    with pytest.raises(NotFound):
        await inventory.get_hold(f"h{event}.0.0123456789abcdef", "alice")


async def test_stale_holder_cannot_confirm_after_someone_else_bought(
    inventory: Inventory, event: int, redis_cluster: RedisCluster
) -> None:
    a = await inventory.hold(event, ["101-A-5", "101-A-6"], "alice", ttl_s=0.2)
    await wait_past(redis_cluster, a.expires_at)
    b = await inventory.hold(event, ["101-A-5", "101-A-6"], "bob")
    bought = await inventory.confirm(b.hold_id, "bob", order())
    with pytest.raises(HoldExpired):
        await inventory.confirm(a.hold_id, "alice", order())
    with pytest.raises(HoldExpired):
        await inventory.extend(a.hold_id, "alice")
    # Alice's expired hold did not free Bob's seats on its way out.
    _, statuses = await inventory.seat_statuses(event)
    assert statuses == {"101-A-5": "pending", "101-A-6": "pending"}
    await inventory.mark_sold(event, 0, bought.order_id)
    assert (await inventory.seat_statuses(event))[1] == {"101-A-5": "sold", "101-A-6": "sold"}


# -- orders -------------------------------------------------------------------------------


async def test_confirm_is_idempotent_per_order_and_order_ids_are_unique(
    inventory: Inventory, event: int
) -> None:
    hold = await inventory.hold(event, ["101-A-1"], "alice")
    oid = order()
    first = await inventory.confirm(hold.hold_id, "alice", oid)
    assert await inventory.confirm(hold.hold_id, "alice", oid) == first
    other = await inventory.hold(event, ["101-A-2"], "alice")
    with pytest.raises(Conflict):
        await inventory.confirm(other.hold_id, "alice", oid)
    # The hold is gone once confirmed.
    with pytest.raises(NotFound):
        await inventory.get_hold(hold.hold_id, "alice")


async def test_revert_restores_the_hold_then_confirm_works_again(
    inventory: Inventory, event: int
) -> None:
    hold = await inventory.hold(event, ["101-A-1", "101-A-2"], "alice")
    placed = await inventory.confirm(hold.hold_id, "alice", order())
    assert await inventory.revert(event, 0, placed.order_id) == "held"
    assert await inventory.get_hold(hold.hold_id, "alice") == hold
    assert await inventory.buyer_usage(event, "alice") == 2
    with pytest.raises(NotFound):
        await inventory.revert(event, 0, placed.order_id)
    again = await inventory.confirm(hold.hold_id, "alice", order())
    assert again.seats == hold.seats


async def test_revert_after_the_hold_time_passed_frees_the_seats(
    inventory: Inventory, event: int, redis_cluster: RedisCluster
) -> None:
    hold = await inventory.hold(event, ["101-A-1"], "alice", ttl_s=0.2)
    placed = await inventory.confirm(hold.hold_id, "alice", order())
    await wait_past(redis_cluster, hold.expires_at)
    assert await inventory.revert(event, 0, placed.order_id) == "free"
    assert (await inventory.seat_statuses(event))[1] == {}
    assert await inventory.availability(event) == {"VIP": 10, "GENERAL": 20}


async def test_mark_sold_and_reject(inventory: Inventory, event: int) -> None:
    a = await inventory.hold(event, ["101-A-1"], "alice")
    b = await inventory.hold(event, ["101-A-2"], "bob")
    sold = await inventory.confirm(a.hold_id, "alice", order())
    rejected = await inventory.confirm(b.hold_id, "bob", order())
    assert await inventory.mark_sold(event, 0, sold.order_id) == 1
    assert await inventory.mark_sold(event, 0, sold.order_id) == 0  # again: no-op
    assert await inventory.reject(event, 0, rejected.order_id) == 1
    assert await inventory.reject(event, 0, rejected.order_id) == 0
    with pytest.raises(Conflict):
        await inventory.reject(event, 0, sold.order_id)
    with pytest.raises(Conflict):
        await inventory.revert(event, 0, sold.order_id)
    with pytest.raises(NotFound):
        await inventory.mark_sold(event, 0, order())
    assert await inventory.reject(event, 0, order()) == 0  # unknown: nothing pending
    assert (await inventory.seat_statuses(event))[1] == {"101-A-1": "sold"}
    assert await inventory.buyer_usage(event, "bob") == 0
    assert await inventory.availability(event) == {"VIP": 9, "GENERAL": 20}


# -- best available ----------------------------------------------------------------------


async def test_best_available_takes_adjacent_seats_front_row_first(
    inventory: Inventory, event: int
) -> None:
    hold = await inventory.hold_best(event, "GENERAL", 3, "alice")
    assert hold.seats == ["101-B-1", "101-B-2", "101-B-3"]
    assert set(hold.categories.values()) == {"GENERAL"}


async def test_best_available_avoids_single_seat_gaps(
    inventory: Inventory, redis_cluster: RedisCluster
) -> None:
    event = fresh_event_id()
    await inventory.load(event, 0, layout(rows="AB", per_row=8))
    # Row A: free run 1..3 (taking 2 leaves a single seat), then 5..8.
    await inventory.hold(event, ["101-A-4"], "x")
    hold = await inventory.hold_best(event, "VIP", 2, "alice")
    assert hold.seats == ["101-A-5", "101-A-6"]  # leaves 7-8, not a lone seat
    # Only the gap-leaving choice is left for 2 seats in 1..3 and 7..8: 7-8 fits exactly.
    hold = await inventory.hold_best(event, "VIP", 2, "bob")
    assert hold.seats == ["101-A-7", "101-A-8"]
    # Now only 1..3 remains: 2 seats must leave a gap, and that is still better than nothing.
    hold = await inventory.hold_best(event, "VIP", 2, "carol")
    assert hold.seats == ["101-A-1", "101-A-2"]
    with pytest.raises(SeatUnavailable):
        await inventory.hold_best(event, "VIP", 2, "dave")
    with pytest.raises(InvalidInput):
        await inventory.hold_best(event, "PLATINUM", 2, "dave")


async def test_best_available_does_not_join_seats_across_an_aisle(
    inventory: Inventory,
) -> None:
    event = fresh_event_id()
    seats = [(f"7-A-{n}", "GENERAL") for n in (1, 2, 4, 5)]
    await inventory.load(event, 0, seats)
    with pytest.raises(SeatUnavailable):
        await inventory.hold_best(event, "GENERAL", 3, "alice")
    assert (await inventory.hold_best(event, "GENERAL", 2, "alice")).seats == ["7-A-1", "7-A-2"]


async def test_best_available_reuses_seats_of_expired_holds(
    inventory: Inventory, redis_cluster: RedisCluster
) -> None:
    event = fresh_event_id()
    await inventory.load(event, 0, [(f"9-A-{n}", "GENERAL") for n in range(1, 5)])
    gone = await inventory.hold_best(event, "GENERAL", 4, "alice", ttl_s=0.2)
    with pytest.raises(SeatUnavailable):
        await inventory.hold_best(event, "GENERAL", 1, "bob")
    await wait_past(redis_cluster, gone.expires_at)
    assert len((await inventory.hold_best(event, "GENERAL", 4, "bob")).seats) == 4


# -- load, versions and deltas ----------------------------------------------------------


async def test_load_marks_sold_seats_and_versions_keep_increasing_across_a_rebuild(
    inventory: Inventory, event: int, redis_cluster: RedisCluster
) -> None:
    hold = await inventory.hold(event, ["101-A-1"], "alice")
    v1, _ = await inventory.seat_statuses(event)
    sold_order = order()
    result = await inventory.load(
        event, 0, layout(), {"101-C-9": (sold_order, "zoe"), "nope-A-1": order()}
    )
    assert (result.seats, result.sold, result.ignored) == (30, 1, 1)
    v2, statuses = await inventory.seat_statuses(event)
    assert version_key(v2) > version_key(v1)
    assert statuses == {"101-C-9": "sold"}  # the rebuild dropped the live hold
    with pytest.raises(NotFound):
        await inventory.get_hold(hold.hold_id, "alice")
    assert await inventory.buyer_usage(event, "zoe") == 1
    batch = await inventory.read_deltas(event, 0, v1)
    assert [d.status for d in batch.deltas] == ["reload"]
    assert not batch.complete  # a client behind a rebuild must refetch

    # Even if the stream itself was lost, min_version keeps versions increasing.
    await redis_cluster.delete(partition_keys(event, 0)[-1])
    future = f"{await server_ms(redis_cluster) + 60_000}-7"
    rebuilt = await inventory.load(event, 0, layout(), {}, min_version=future)
    assert version_key(rebuilt.version) > version_key(future)


async def test_deltas_follow_every_state_change_in_order(inventory: Inventory, event: int) -> None:
    start, _ = await inventory.seat_statuses(event)
    hold = await inventory.hold(event, ["101-A-1", "101-A-2"], "alice")
    placed = await inventory.confirm(hold.hold_id, "alice", order())
    await inventory.revert(event, 0, placed.order_id)
    placed = await inventory.confirm(hold.hold_id, "alice", order())
    await inventory.mark_sold(event, 0, placed.order_id)
    other = await inventory.hold(event, ["101-B-1"], "bob")
    await inventory.release(other.hold_id, "bob")
    batch = await inventory.read_deltas(event, 0, start)
    assert batch.complete
    assert [(d.op, d.status) for d in batch.deltas] == [
        ("hold", "held"),
        ("confirm", "pending"),
        ("revert", "held"),
        ("confirm", "pending"),
        ("sold", "sold"),
        ("hold", "held"),
        ("release", "free"),
    ]
    versions = [version_key(d.version) for d in batch.deltas]
    assert versions == sorted(versions) and len(set(versions)) == len(versions)
    assert batch.deltas[-1].hold_id == other.hold_id
    latest, _ = await inventory.seat_statuses(event)
    assert latest == batch.last_version
    # Paging from the middle gives the rest.
    rest = await inventory.read_deltas(event, 0, batch.deltas[3].version)
    assert [d.op for d in rest.deltas] == ["sold", "hold", "release"]


async def test_read_deltas_blocks_until_a_change(inventory: Inventory, event: int) -> None:
    start, _ = await inventory.seat_statuses(event)
    waiting = asyncio.create_task(inventory.read_deltas(event, 0, start, block_ms=2000))
    await asyncio.sleep(0.1)
    await inventory.hold(event, ["101-A-9"], "alice")
    batch = await waiting
    assert [d.seats for d in batch.deltas] == [["101-A-9"]]


# -- partitions ---------------------------------------------------------------------------


async def test_best_available_on_a_split_event_prefers_a_gap_free_run_in_any_partition(
    redis_cluster: RedisCluster,
) -> None:
    plan = PartitionPlan(count=2, sections={"N": 0, "S": 1})
    inventory = Inventory(redis_cluster, SETTINGS, plans=lambda _e: plan)
    event = fresh_event_id()
    await inventory.load(event, 0, layout(rows="A", per_row=3, section="N"))
    await inventory.load(event, 1, layout(rows="A", per_row=2, section="S"))
    # North's only row has 3 seats: 2 of them would leave a lone seat. South fits exactly.
    best = await inventory.hold_best(event, "VIP", 2, "alice")
    assert (best.partition, best.seats) == (1, ["S-A-1", "S-A-2"])
    # No gap-free run is left anywhere: the least-bad one (front partition first) is taken.
    best = await inventory.hold_best(event, "VIP", 2, "bob")
    assert (best.partition, best.seats) == (0, ["N-A-1", "N-A-2"])
    with pytest.raises(SeatUnavailable):
        await inventory.hold_best(event, "VIP", 2, "carol")


async def test_partitions_split_an_event_by_section(redis_cluster: RedisCluster) -> None:
    plan = PartitionPlan(count=2, sections={"N": 0, "S": 1})
    inventory = Inventory(redis_cluster, SETTINGS, plans=lambda _e: plan)
    event = fresh_event_id()
    await inventory.load(event, 0, layout(rows="AB", per_row=4, section="N"))
    await inventory.load(event, 1, layout(rows="AB", per_row=4, section="S"))
    north = await inventory.hold(event, ["N-A-1", "N-A-2", "N-A-3", "N-A-4"], "alice")
    assert north.partition == 0 and north.hold_id.startswith(f"h{event}.0.")
    south = await inventory.hold(event, ["S-B-1", "S-B-2"], "alice")
    assert south.partition == 1
    # The limit is per event: alice has 6 across the two partitions.
    with pytest.raises(LimitExceeded):
        await inventory.hold(event, ["S-B-3"], "alice")
    with pytest.raises(InvalidInput):
        await inventory.hold(event, ["N-B-1", "S-A-1"], "bob")
    best = await inventory.hold_best(event, "VIP", 4, "bob")  # north VIP is gone
    assert best.partition == 1 and best.seats == [f"S-A-{n}" for n in range(1, 5)]
    version, statuses = await inventory.seat_statuses(event)
    assert len(version.split(",")) == 2
    assert len(statuses) == 10
    assert await inventory.availability(event) == {"VIP": 0, "GENERAL": 6}
    with pytest.raises(InvalidInput):
        await inventory.load(event, 0, layout(section="S"))


async def test_mark_sold_of_an_order_redis_forgot_still_sells_its_seats(
    inventory: Inventory, event: int
) -> None:
    # PostgreSQL committed an order that a rebuild dropped from Redis; meanwhile
    # someone else holds one of its seats again.
    placed = order()
    other = await inventory.hold(event, ["101-B-2"], "bob")
    sold = await inventory.mark_sold(event, 0, placed, seats=["101-B-1", "101-B-2"], buyer="zoe")
    assert sold == 2
    assert (await inventory.seat_statuses(event))[1] == {"101-B-1": "sold", "101-B-2": "sold"}
    assert await inventory.buyer_usage(event, "zoe") == 2
    assert await inventory.mark_sold(event, 0, placed) == 0  # known now: idempotent
    # Bob's hold lost the seat: it can be neither extended back nor confirmed.
    await inventory.extend(other.hold_id, "bob")
    assert (await inventory.seat_statuses(event))[1]["101-B-2"] == "sold"
    with pytest.raises(HoldExpired):
        await inventory.confirm(other.hold_id, "bob", order())
    assert await inventory.availability(event) == {"VIP": 10, "GENERAL": 18}


async def test_mark_sold_many_settles_each_order_as_mark_sold_would(
    inventory: Inventory, event: int
) -> None:
    a = await inventory.confirm(
        (await inventory.hold(event, ["101-A-1", "101-A-2"], "alice")).hold_id, "alice", order()
    )
    b = await inventory.confirm(
        (await inventory.hold(event, ["101-A-3"], "bob")).hold_id, "bob", order()
    )
    c = await inventory.confirm(
        (await inventory.hold(event, ["101-A-4"], "carol")).hold_id, "carol", order()
    )
    assert await inventory.reject(event, 0, c.order_id) == 1  # Redis says rejected
    assert await inventory.mark_sold(event, 0, b.order_id) == 1  # already sold
    forgotten = order()  # a rebuild dropped it; PostgreSQL committed it
    other = await inventory.hold(event, ["101-B-2"], "dan")
    unknown = order()  # forgotten and no seats given
    before = (await inventory.read_deltas(event, 0, "0-0")).last_version

    results = await inventory.mark_sold_many(
        event,
        0,
        [
            (a.order_id, ["101-A-1", "101-A-2"], "alice"),
            (forgotten, ["101-B-1", "101-B-2"], "zoe"),
            (c.order_id, ["101-A-4"], "carol"),
            (b.order_id, [], ""),
            (unknown, [], ""),
        ],
    )
    assert results[0] == 2
    assert results[1] == 2
    # Rejected in Redis, committed in PostgreSQL (the persister was late): PostgreSQL
    # wins, its seats are sold under it (issue 19.5).
    assert results[2] == 1
    assert results[3] == 0
    assert isinstance(results[4], NotFound)
    assert (await inventory.seat_statuses(event))[1] == {
        "101-A-1": "sold",
        "101-A-2": "sold",
        "101-A-3": "sold",
        "101-A-4": "sold",
        "101-B-1": "sold",
        "101-B-2": "sold",
    }
    assert await inventory.buyer_usage(event, "zoe") == 2
    assert await inventory.buyer_usage(event, "carol") == 1
    assert await inventory.availability(event) == {"VIP": 6, "GENERAL": 18}
    # One delta per order that changed, as mark_sold emits them.
    deltas = (await inventory.read_deltas(event, 0, before)).deltas
    assert [(d.op, d.order_id, sorted(d.seats)) for d in deltas] == [
        ("sold", a.order_id, ["101-A-1", "101-A-2"]),
        ("sold", forgotten, ["101-B-1", "101-B-2"]),
        ("sold", c.order_id, ["101-A-4"]),
    ]
    with pytest.raises(HoldExpired):
        await inventory.confirm(other.hold_id, "dan", order())
    # Again: idempotent, known orders now.
    again = await inventory.mark_sold_many(event, 0, [(a.order_id, [], ""), (forgotten, [], "")])
    assert again == [0, 0]
    assert await inventory.mark_sold_many(event, 0, []) == []


async def test_reject_many_settles_each_order_as_reject_would(
    inventory: Inventory, event: int
) -> None:
    a = await inventory.confirm(
        (await inventory.hold(event, ["101-A-1", "101-A-2"], "alice")).hold_id, "alice", order()
    )
    b = await inventory.confirm(
        (await inventory.hold(event, ["101-A-3"], "bob")).hold_id, "bob", order()
    )
    assert await inventory.mark_sold(event, 0, b.order_id) == 1
    results = await inventory.reject_many(event, 0, [a.order_id, b.order_id, order()])
    assert results[0] == 2
    assert isinstance(results[1], Conflict) and results[1].extra["status"] == "sold"
    assert results[2] == 0  # unknown: nothing pending under it
    assert await inventory.reject_many(event, 0, [a.order_id]) == [0]
    assert (await inventory.seat_statuses(event))[1] == {"101-A-3": "sold"}
    assert await inventory.buyer_usage(event, "alice") == 0
    assert await inventory.availability(event) == {"VIP": 9, "GENERAL": 20}


async def test_many_variants_split_large_batches_into_bounded_calls(
    inventory: Inventory, event: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core import inventory as inventory_module

    monkeypatch.setattr(inventory_module, "MANY_CHUNK", 2)
    calls: list[int] = []
    run = inventory._run

    async def counting(name: str, event_id: int, partition: int, args: list[object]) -> object:
        calls.append(len(args))
        return await run(name, event_id, partition, args)

    monkeypatch.setattr(inventory, "_run", counting)
    orders = [(order(), [f"101-C-{n}"], "erin") for n in range(1, 6)]
    assert await inventory.mark_sold_many(event, 0, orders) == [1, 1, 1, 1, 1]
    assert len(calls) == 3  # 2 + 2 + 1 orders
    rejected = await inventory.reject_many(event, 0, [o for o, _, _ in orders])
    assert [type(r) for r in rejected] == [Conflict] * 5  # sold: cannot be rejected
    assert len(calls) == 6
    assert [o for o, _, _ in orders] == [r.extra["order_id"] for r in rejected]


async def test_the_hold_budget_counts_every_attempt_in_the_same_script_call(
    inventory: Inventory, event: int
) -> None:
    from core.errors import RateLimited
    from core.holds import AttemptBudget

    budget = AttemptBudget(per_minute=6, burst=3)  # one attempt per 10 s, three at once
    await inventory.hold(event, ["101-B-1"], "rita", budget=budget)
    await inventory.hold(event, ["101-B-2"], "bob")  # no budget: not counted for anyone
    with pytest.raises(SeatUnavailable):  # a refused attempt spends the budget too
        await inventory.hold(event, ["101-B-1"], "rita", budget=budget)
    await inventory.hold_best(event, "GENERAL", 2, "rita", budget=budget)
    with pytest.raises(RateLimited) as refused:
        await inventory.hold(event, ["101-C-9"], "rita", budget=budget)
    assert 1 <= refused.value.retry_after_s <= 10
    with pytest.raises(RateLimited):
        await inventory.hold_best(event, "GENERAL", 1, "rita", budget=budget)
    # Another buyer's budget is their own; without a budget the call is not limited.
    await inventory.hold(event, ["101-C-9"], "sam", budget=budget)
    await inventory.hold(event, ["101-C-10"], "rita")
