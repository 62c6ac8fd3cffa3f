"""A hypothesis state machine drives the real inventory and a simple model side by side.

Every operation (hold, best available, extend, release, confirm, revert, mark
sold, reject, expiry and the sweep) is applied to both; after each step the
seat statuses, the free counts per category and every buyer's usage must agree.
Holds either live long (they never expire during a run) or expire at once
(short TTL, then the machine waits past their expiry on the Redis clock), so
the model never has to guess about timing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from redis.asyncio.cluster import ClusterNode, RedisCluster

from core.errors import (
    Conflict,
    DomainError,
    HoldExpired,
    LimitExceeded,
    NotFound,
    NotOwner,
    SeatUnavailable,
)
from core.inventory import Inventory
from core.settings import HoldSettings
from tests.conftest import fresh_event_id

pytestmark = pytest.mark.slow

T = TypeVar("T")

LIMIT = 4
HOLD_SETTINGS = HoldSettings(
    ttl_s=120, max_lifetime_factor=2.0, max_seats_per_buyer=LIMIT, max_seats_per_hold=3
)
ROWS = {"A": "VIP", "B": "VIP", "C": "GENERAL"}  # front to back
SEATS = [f"1-{row}-{n}" for row in ROWS for n in range(1, 5)]
CATEGORY = {seat: ROWS[seat.split("-")[1]] for seat in SEATS}
BUYERS = ["alice", "bob", "carol"]
SHORT_TTL = 0.15


@dataclass
class ModelHold:
    buyer: str
    seats: list[str]
    # live | expired (record kept) | tomb (expired and cleaned) | released | confirmed
    status: str


@dataclass
class ModelOrder:
    hold_id: str
    buyer: str
    seats: list[str]
    status: str  # pending | sold | rejected | reverted


class Env:
    """One event loop and one cluster client for the whole test."""

    loop: asyncio.AbstractEventLoop
    client: RedisCluster
    inventory: Inventory

    @classmethod
    def run(cls, coro: Coroutine[Any, Any, T]) -> T:
        return cls.loop.run_until_complete(coro)


async def server_ms(client: RedisCluster) -> int:
    secs, micros = await client.time()
    return int(secs) * 1000 + int(micros) // 1000


async def wait_past(client: RedisCluster, ms: int) -> None:
    while (now := await server_ms(client)) <= ms:
        await asyncio.sleep((ms - now + 5) / 1000)


class InventoryMachine(RuleBasedStateMachine):
    holds = Bundle("holds")
    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.inv = Env.inventory
        self.event = fresh_event_id()
        self.seat: dict[str, tuple[str, str]] = {}  # seat -> (status, hold or order id)
        self.model_holds: dict[str, ModelHold] = {}
        self.model_orders: dict[str, ModelOrder] = {}

    @initialize()
    def load(self) -> None:
        Env.run(self.inv.load(self.event, 0, [(s, CATEGORY[s]) for s in SEATS]))

    # -- model helpers --------------------------------------------------------------------

    def usage(self, buyer: str) -> int:
        held = sum(
            len(h.seats)
            for h in self.model_holds.values()
            if h.buyer == buyer and h.status == "live"
        )
        bought = sum(
            len(o.seats)
            for o in self.model_orders.values()
            if o.buyer == buyer and o.status in ("pending", "sold")
        )
        return held + bought

    def expect_hold(self, buyer: str, seats: list[str]) -> type[DomainError] | None:
        if any(s in self.seat for s in seats):
            return SeatUnavailable
        if self.usage(buyer) + len(seats) > LIMIT:
            return LimitExceeded
        return None

    def add_hold(self, hold_id: str, buyer: str, seats: list[str]) -> None:
        self.model_holds[hold_id] = ModelHold(buyer, list(seats), "live")
        for s in seats:
            self.seat[s] = ("held", hold_id)

    def free_seats_of(self, ref: str) -> None:
        for s in [s for s, (_, r) in self.seat.items() if r == ref]:
            del self.seat[s]

    def hold_access(self, hold_id: str, buyer: str) -> type[DomainError] | None:
        """The error an owner-only operation gets (extend / confirm / get)."""
        h = self.model_holds[hold_id]
        if h.status in ("released", "confirmed"):
            return NotFound
        if h.status == "tomb":
            return HoldExpired
        if h.buyer != buyer:
            return NotOwner
        if h.status == "expired":
            h.status = "tomb"  # the owner's access sweeps it
            return HoldExpired
        return None

    def best_choice(self, category: str, quantity: int) -> list[str] | None:
        fallback = None
        for row, cat in ROWS.items():
            if cat != category:
                continue
            seats = [f"1-{row}-{n}" for n in range(1, 5)]
            i = 0
            while i < len(seats):
                if seats[i] in self.seat:
                    i += 1
                    continue
                j = i
                while j + 1 < len(seats) and seats[j + 1] not in self.seat:
                    j += 1
                length = j - i + 1
                if length == quantity or length - quantity >= 2:
                    return seats[i : i + quantity]
                if length > quantity and fallback is None:
                    fallback = seats[i : i + quantity]
                i = j + 1
        return fallback

    # -- rules ----------------------------------------------------------------------------

    @rule(
        target=holds,
        buyer=st.sampled_from(BUYERS),
        seats=st.lists(st.sampled_from(SEATS), min_size=1, max_size=3, unique=True),
    )
    def hold(self, buyer: str, seats: list[str]) -> Any:
        expected = self.expect_hold(buyer, seats)
        if expected is not None:
            with pytest.raises(expected) as err:
                Env.run(self.inv.hold(self.event, seats, buyer))
            if expected is SeatUnavailable:
                assert err.value.extra["seats"] == [s for s in seats if s in self.seat]
            return multiple()
        hold = Env.run(self.inv.hold(self.event, seats, buyer))
        assert hold.seats == seats
        self.add_hold(hold.hold_id, buyer, seats)
        return hold.hold_id

    @rule(
        target=holds,
        buyer=st.sampled_from(BUYERS),
        seats=st.lists(st.sampled_from(SEATS), min_size=1, max_size=3, unique=True),
    )
    def hold_and_let_expire(self, buyer: str, seats: list[str]) -> Any:
        expected = self.expect_hold(buyer, seats)
        if expected is not None:
            with pytest.raises(expected):
                Env.run(self.inv.hold(self.event, seats, buyer, ttl_s=SHORT_TTL))
            return multiple()
        hold = Env.run(self.inv.hold(self.event, seats, buyer, ttl_s=SHORT_TTL))
        Env.run(wait_past(Env.client, hold.expires_at))
        self.model_holds[hold.hold_id] = ModelHold(buyer, list(seats), "expired")
        return hold.hold_id

    @rule(
        target=holds,
        buyer=st.sampled_from(BUYERS),
        category=st.sampled_from(["VIP", "GENERAL"]),
        quantity=st.integers(1, 3),
    )
    def hold_best(self, buyer: str, category: str, quantity: int) -> Any:
        if self.usage(buyer) + quantity > LIMIT:
            with pytest.raises(LimitExceeded):
                Env.run(self.inv.hold_best(self.event, category, quantity, buyer))
            return multiple()
        for h in self.model_holds.values():  # best available sweeps first
            if h.status == "expired":
                h.status = "tomb"
        choice = self.best_choice(category, quantity)
        if choice is None:
            with pytest.raises(SeatUnavailable):
                Env.run(self.inv.hold_best(self.event, category, quantity, buyer))
            return multiple()
        hold = Env.run(self.inv.hold_best(self.event, category, quantity, buyer))
        assert hold.seats == choice
        self.add_hold(hold.hold_id, buyer, choice)
        return hold.hold_id

    @rule(hold_id=holds, buyer=st.sampled_from(BUYERS))
    def get_hold(self, hold_id: str, buyer: str) -> None:
        h = self.model_holds[hold_id]
        expected: type[DomainError] | None
        if h.status in ("released", "confirmed"):
            expected = NotFound
        elif h.status == "tomb":
            expected = HoldExpired
        elif h.buyer != buyer:
            expected = NotOwner
        elif h.status == "expired":
            expected = HoldExpired  # a read does not sweep
        else:
            expected = None
        if expected is None:
            assert Env.run(self.inv.get_hold(hold_id, buyer)).seats == h.seats
        else:
            with pytest.raises(expected):
                Env.run(self.inv.get_hold(hold_id, buyer))

    @rule(hold_id=holds, buyer=st.sampled_from(BUYERS))
    def extend(self, hold_id: str, buyer: str) -> None:
        expected = self.hold_access(hold_id, buyer)
        if expected is None:
            hold = Env.run(self.inv.extend(hold_id, buyer))
            assert hold.expires_at <= hold.max_expires_at
        else:
            with pytest.raises(expected):
                Env.run(self.inv.extend(hold_id, buyer))

    @rule(hold_id=holds, buyer=st.sampled_from(BUYERS))
    def release(self, hold_id: str, buyer: str) -> None:
        h = self.model_holds[hold_id]
        expected: type[DomainError] | None = None
        if h.status in ("released", "confirmed"):
            expected = NotFound
        elif h.status != "tomb" and h.buyer != buyer:
            expected = NotOwner
        if expected is not None:
            with pytest.raises(expected):
                Env.run(self.inv.release(hold_id, buyer))
            return
        Env.run(self.inv.release(hold_id, buyer))
        if h.status == "live":
            h.status = "released"
            self.free_seats_of(hold_id)
        elif h.status == "expired":
            h.status = "tomb"

    @rule(target=orders, hold_id=holds, buyer=st.sampled_from(BUYERS))
    def confirm(self, hold_id: str, buyer: str) -> Any:
        expected = self.hold_access(hold_id, buyer)
        order_id = str(uuid.uuid4())
        if expected is not None:
            with pytest.raises(expected):
                Env.run(self.inv.confirm(hold_id, buyer, order_id))
            return multiple()
        placed = Env.run(self.inv.confirm(hold_id, buyer, order_id))
        h = self.model_holds[hold_id]
        assert placed.seats == h.seats
        h.status = "confirmed"
        self.model_orders[order_id] = ModelOrder(hold_id, buyer, h.seats, "pending")
        for s in h.seats:
            self.seat[s] = ("pending", order_id)
        return order_id

    @rule(order_id=orders)
    def revert(self, order_id: str) -> None:
        o = self.model_orders[order_id]
        if o.status == "reverted":
            with pytest.raises(NotFound):
                Env.run(self.inv.revert(self.event, 0, order_id))
        elif o.status != "pending":
            with pytest.raises(Conflict):
                Env.run(self.inv.revert(self.event, 0, order_id))
        else:
            assert Env.run(self.inv.revert(self.event, 0, order_id)) == "held"
            o.status = "reverted"
            self.add_hold(o.hold_id, o.buyer, o.seats)

    @rule(order_id=orders)
    def mark_sold(self, order_id: str) -> None:
        o = self.model_orders[order_id]
        if o.status == "reverted":
            with pytest.raises(NotFound):
                Env.run(self.inv.mark_sold(self.event, 0, order_id))
        elif o.status == "rejected":
            with pytest.raises(Conflict):
                Env.run(self.inv.mark_sold(self.event, 0, order_id))
        else:
            changed = Env.run(self.inv.mark_sold(self.event, 0, order_id))
            assert changed == (len(o.seats) if o.status == "pending" else 0)
            o.status = "sold"
            for s in o.seats:
                self.seat[s] = ("sold", order_id)

    @rule(order_id=orders)
    def reject(self, order_id: str) -> None:
        o = self.model_orders[order_id]
        if o.status == "reverted":
            # Redis no longer knows the order: nothing is pending under it.
            assert Env.run(self.inv.reject(self.event, 0, order_id)) == 0
        elif o.status == "sold":
            with pytest.raises(Conflict):
                Env.run(self.inv.reject(self.event, 0, order_id))
        else:
            freed = Env.run(self.inv.reject(self.event, 0, order_id))
            assert freed == (len(o.seats) if o.status == "pending" else 0)
            o.status = "rejected"
            self.free_seats_of(order_id)

    @rule()
    def sweep(self) -> None:
        due = [h for h in self.model_holds.values() if h.status == "expired"]
        assert Env.run(self.inv.sweep(self.event, 0)) == len(due)
        for h in due:
            h.status = "tomb"

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def statuses_agree(self) -> None:
        _, statuses = Env.run(self.inv.seat_statuses(self.event))
        assert statuses == {s: status for s, (status, _) in self.seat.items()}

    @invariant()
    def free_counts_agree(self) -> None:
        free = {"VIP": 0, "GENERAL": 0}
        for s in SEATS:
            if s not in self.seat:
                free[CATEGORY[s]] += 1
        assert Env.run(self.inv.availability(self.event)) == free

    @invariant()
    def usage_agrees(self) -> None:
        for buyer in BUYERS:
            assert Env.run(self.inv.buyer_usage(self.event, buyer)) == self.usage(buyer)


def test_inventory_behaves_like_the_model(services: dict[str, str]) -> None:
    nodes = [
        ClusterNode(host, int(port))
        for host, _, port in (
            n.rpartition(":") for n in services["TB_REDIS_CLUSTER_NODES"].split(",")
        )
    ]
    Env.loop = asyncio.new_event_loop()
    try:
        Env.client = RedisCluster(startup_nodes=nodes)
        Env.run(Env.client.initialize())
        Env.inventory = Inventory(Env.client, HOLD_SETTINGS)
        run_state_machine_as_test(
            InventoryMachine,
            settings=settings(
                max_examples=60,
                stateful_step_count=30,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
    finally:
        Env.run(Env.client.aclose())
        Env.loop.close()
