"""Hold ids, TTL policy and input rules: pure, no I/O."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from api.catalog.repository import EventRecord
from api.catalog.service import EVENT_TTL_S, Catalog
from core.errors import InvalidInput, NotFound, SaleClosed, SaleNotOpen
from core.events import Venue
from core.holds import (
    hold_ttl_ms,
    max_lifetime_ms,
    new_hold_id,
    parse_hold_id,
    validate_buyer,
    validate_event_id,
    validate_order_id,
    validate_quantity,
)
from core.inventory import PartitionPlan, partition_keys
from core.settings import HoldSettings

SETTINGS = HoldSettings(ttl_s=600, max_lifetime_factor=2.0, max_seats_per_hold=6)


@given(event_id=st.integers(1, 2**63 - 1), partition=st.integers(0, 63))
def test_hold_ids_route_to_their_event_and_partition(event_id: int, partition: int) -> None:
    hold_id = new_hold_id(event_id, partition)
    assert parse_hold_id(hold_id) == (event_id, partition)


def test_hold_id_shape() -> None:
    hold_id = new_hold_id(5, 0)
    assert hold_id.startswith("h5.0.") and len(hold_id) == len("h5.0.") + 16
    assert new_hold_id(5, 0) != hold_id


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "h5.0",
        "h5.0.xyz",
        "h05.0.0123456789abcdef",
        "h0.0.0123456789abcdef",
        "h5.64.0123456789abcdef",
        "h5.0.0123456789ABCDEF",
        "h5.0.0123456789abcdef0",
        f"h{2**63}.0.0123456789abcdef",
        None,
        5,
    ],
)
def test_malformed_hold_ids(bad: object) -> None:
    with pytest.raises(InvalidInput):
        parse_hold_id(bad)


def test_ttl_policy() -> None:
    assert hold_ttl_ms(None, SETTINGS) == 600_000
    assert hold_ttl_ms(0.5, SETTINGS) == 500
    assert hold_ttl_ms(600, SETTINGS) == 600_000
    for bad in [0, 0.05, -1, 601, float("nan"), float("inf"), True, "60"]:
        with pytest.raises(InvalidInput):
            hold_ttl_ms(bad, SETTINGS)  # type: ignore[arg-type]


def test_lifetime_cap_is_a_multiple_of_the_ttl() -> None:
    assert max_lifetime_ms(600_000, SETTINGS) == 1_200_000
    assert max_lifetime_ms(1000, HoldSettings(max_lifetime_factor=0.5)) == 1000  # never below ttl


def test_input_rules() -> None:
    assert validate_event_id(1) == 1
    for bad in [0, -3, 2**63, True, "5", 1.0]:
        with pytest.raises(InvalidInput):
            validate_event_id(bad)
    assert validate_buyer("client:partner-1") == "client:partner-1"
    for bad in ["", "a" * 201, "bad\nbuyer", None]:
        with pytest.raises(InvalidInput):
            validate_buyer(bad)
    oid = str(uuid.uuid4())
    assert validate_order_id(oid) == oid
    for bad in ["", "not-a-uuid", oid.upper(), oid.replace("-", ""), None]:
        with pytest.raises(InvalidInput):
            validate_order_id(bad)
    assert validate_quantity(6, SETTINGS) == 6
    for bad in [0, 7, True, "2", 2.0]:
        with pytest.raises(InvalidInput):
            validate_quantity(bad, SETTINGS)


def test_partition_plan() -> None:
    assert PartitionPlan().partition_of("101-A-1") == 0
    plan = PartitionPlan(count=4, sections={"N": 3})
    assert plan.partition_of("N-A-1") == 3
    # Unlisted sections hash stably, and a whole section stays in one partition.
    assert {plan.partition_of(f"207-{r}-{n}") for r in "ABC" for n in range(1, 30)} == {
        plan.partition_of("207-A-1")
    }
    with pytest.raises(InvalidInput):
        PartitionPlan(count=2, sections={"N": 2})
    with pytest.raises(InvalidInput):
        PartitionPlan(count=0)


def test_partition_keys_share_one_hash_tag() -> None:
    keys = partition_keys(42, 3)
    assert len(keys) == 16  # KEYS[1..16] of lua/lib/prelude.lua
    assert all(k.startswith("{ev:42:3}:") for k in keys)
    assert keys[-1] == "{ev:42:3}:stream"


# -- the sale window on the hold path (api.catalog.service.Catalog.on_sale) -----------------

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Events:
    """The one catalog query ``on_sale`` may make, counted."""

    def __init__(self, **changes: object) -> None:
        fields: dict[str, object] = {
            "id": 5,
            "title": "Show",
            "category": "CONCERT",
            "venue": Venue("Hall", "Street 1"),
            "starts_at": NOW + timedelta(days=10),
            "sale_opens_at": NOW - timedelta(days=1),
            "sale_closes_at": NOW + timedelta(days=10),
            "status": "published",
            "capacity": 100,
            "partitions": 1,
        }
        fields.update(changes)
        self.record = EventRecord(**fields)  # type: ignore[arg-type]
        self.queries = 0

    async def event(self, event_id: int) -> EventRecord | None:
        self.queries += 1
        return self.record if event_id == self.record.id else None


class Plans:
    """The API's partition plans: what the catalog says after each re-read, counted."""

    def __init__(self, catalog_says: dict[int, PartitionPlan]) -> None:
        self.catalog_says = catalog_says
        self.known: dict[int, PartitionPlan] = {}
        self.reads = 0

    def __call__(self, event_id: int) -> PartitionPlan:
        return self.known.get(event_id, PartitionPlan())

    async def refresh(self) -> None:
        self.reads += 1
        self.known = dict(self.catalog_says)


def catalog_for(
    events: Events, now: datetime = NOW, plans: Plans | None = None
) -> tuple[Catalog, list[float]]:
    clock = [1000.0]
    catalog = Catalog(
        events,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        plans=plans,
        clock=lambda: clock[0],
        now=lambda: now,
    )
    return catalog, clock


async def test_an_event_split_since_the_last_plan_read_gets_its_plan_first() -> None:
    split = PartitionPlan(count=2, sections={"101": 0, "301": 1})
    plans = Plans({5: split})
    catalog, clock = catalog_for(Events(partitions=2), plans=plans)
    await catalog.on_sale(5)
    assert plans.reads == 1 and plans(5) == split  # before the hold reaches the inventory
    clock[0] += EVENT_TTL_S + 0.1
    await catalog.on_sale(5)
    assert plans.reads == 1  # plan and catalog agree: no re-read


async def test_one_partition_events_need_no_plan_read() -> None:
    plans = Plans({})
    catalog, _ = catalog_for(Events(), plans=plans)
    await catalog.on_sale(5)
    assert plans.reads == 0


async def test_the_sale_check_is_served_from_the_cached_event() -> None:
    events = Events()
    catalog, clock = catalog_for(events)
    for _ in range(100):
        assert (await catalog.on_sale(5)).id == 5
    assert events.queries == 1  # not one query per hold
    clock[0] += EVENT_TTL_S + 0.1
    await catalog.on_sale(5)
    assert events.queries == 2  # a short TTL: catalog changes arrive soon


async def test_holds_outside_the_sale_window_are_refused() -> None:
    early, _ = catalog_for(Events(sale_opens_at=NOW + timedelta(hours=1)))
    with pytest.raises(SaleNotOpen):
        await early.on_sale(5)
    late, _ = catalog_for(Events(sale_closes_at=NOW, starts_at=NOW + timedelta(hours=1)))
    with pytest.raises(SaleClosed):
        await late.on_sale(5)
    cancelled, _ = catalog_for(Events(status="cancelled"))
    with pytest.raises(SaleClosed):
        await cancelled.on_sale(5)
    unknown, _ = catalog_for(Events())
    with pytest.raises(NotFound):
        await unknown.on_sale(6)
