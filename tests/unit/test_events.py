"""core/events.py: pricing rules, the generated seat map, wire types; and the list cursor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from api.catalog.service import decode_cursor, encode_cursor
from core.errors import InvalidInput, NotOnSale, SaleClosed, SaleNotOpen
from core.events import (
    MAX_GENERATED_CAPACITY,
    PRICE_TIERS,
    SEAT_STATUS_CODES,
    SEAT_STATUS_LEGEND,
    EventPage,
    PriceCategory,
    ensure_on_sale,
    parse_price_minor,
    plan_seat_map,
    price_categories,
    row_label,
    seats_per_category,
    tier_price,
)
from core.seats import SEAT_STATUSES, parse_seat_id
from migrations.seed import read_csv, slugify

# -- prices ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minor"),
    [("89.99", 8999), ("125.50", 12550), ("299.00", 29900), ("35", 3500), (" 0.01 ", 1)],
)
def test_parse_price_minor(text: str, minor: int) -> None:
    assert parse_price_minor(text) == minor


@pytest.mark.parametrize("text", ["", "abc", "0", "-5", "1.999", "NaN", "inf"])
def test_parse_price_minor_rejects(text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_price_minor(text)


def test_price_categories_from_base_price() -> None:
    assert price_categories(8999) == [
        PriceCategory("VIP", "VIP", 17998, "PEN"),
        PriceCategory("PLATINUM", "Platinum", 13499, "PEN"),  # 134.985 rounds half-up
        PriceCategory("GENERAL", "General", 8999, "PEN"),
    ]


def test_tier_price_rounds_half_up_to_whole_minor_units() -> None:
    assert tier_price(1, Decimal("1.5")) == 2
    assert tier_price(3, Decimal("1.5")) == 5
    assert tier_price(12550, Decimal("1.5")) == 18825


def test_price_categories_rejects_non_positive_base() -> None:
    with pytest.raises(InvalidInput):
        price_categories(0)


@given(st.integers(min_value=1, max_value=10**9))
def test_front_categories_never_cost_less(base: int) -> None:
    prices = [p.price_minor for p in price_categories(base)]
    assert prices == sorted(prices, reverse=True)
    assert prices[-1] == base


def test_tier_shares_sum_to_one() -> None:
    assert sum(t.share for t in PRICE_TIERS) == 1


# -- seat split and layout ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "expected"),
    [
        (300, {"VIP": 30, "PLATINUM": 90, "GENERAL": 180}),
        (80_000, {"VIP": 8_000, "PLATINUM": 24_000, "GENERAL": 48_000}),
        (7, {"VIP": 1, "PLATINUM": 2, "GENERAL": 4}),
        (3, {"VIP": 1, "PLATINUM": 1, "GENERAL": 1}),
        (1, {"VIP": 0, "PLATINUM": 0, "GENERAL": 1}),
    ],
)
def test_seats_per_category(capacity: int, expected: dict[str, int]) -> None:
    assert seats_per_category(capacity) == expected


@given(st.integers(min_value=1, max_value=200_000))
def test_seats_per_category_sums_to_capacity(capacity: int) -> None:
    assert sum(seats_per_category(capacity).values()) == capacity


@settings(deadline=None, max_examples=60)  # 2 shared cores: timings vary
@given(st.integers(min_value=1, max_value=MAX_GENERATED_CAPACITY))
def test_seat_map_has_exactly_capacity_valid_unique_seats(capacity: int) -> None:
    plan = plan_seat_map(capacity)
    seats = [f"{s.code}-{r.label}-{n}" for s in plan for r in s.rows for n in range(1, r.seats + 1)]
    assert len(seats) == capacity
    assert len(set(seats)) == capacity
    for seat in seats[:: max(1, capacity // 50)]:
        assert parse_seat_id(seat).seat_id == seat  # the shared seat-id contract
    per_category: dict[str, int] = {}
    for section in plan:
        per_category[section.category] = per_category.get(section.category, 0) + sum(
            r.seats for r in section.rows
        )
    assert {k: v for k, v in per_category.items() if v} == {
        k: v for k, v in seats_per_category(capacity).items() if v
    }


@pytest.mark.parametrize("capacity", [300, 800, 1500, 3500, 5000, 20_000, 45_000, 80_000])
def test_seat_map_rows_and_front_sections(capacity: int) -> None:
    plan = plan_seat_map(capacity)
    row_sizes = [r.seats for s in plan for r in s.rows]
    # Rows of 20 (halls), 30 (arenas) or 40 (stadiums), spread evenly: max - min <= 1
    # inside a section.
    assert max(row_sizes) in (20, 30, 40)
    for section in plan:
        sizes = [r.seats for r in section.rows]
        assert max(sizes) - min(sizes) <= 1
    # Front first: VIP sections (1xx), then PLATINUM (2xx), then GENERAL (3xx).
    categories = [s.category for s in plan]
    assert categories == sorted(categories, key=["VIP", "PLATINUM", "GENERAL"].index)
    assert all(s.code[0] == "123"[["VIP", "PLATINUM", "GENERAL"].index(s.category)] for s in plan)


def test_stadium_layout() -> None:
    plan = plan_seat_map(80_000)
    assert len(plan) == 80
    assert plan[0].code == "101" and plan[0].name == "VIP 101"
    assert [r.label for r in plan[0].rows][:3] == ["A", "B", "C"]
    assert all(len(s.rows) == 25 and {r.seats for r in s.rows} == {40} for s in plan)


def test_too_large_capacity_is_refused() -> None:
    with pytest.raises(InvalidInput):
        plan_seat_map(MAX_GENERATED_CAPACITY + 1)
    with pytest.raises(InvalidInput):
        plan_seat_map(0)


@pytest.mark.parametrize(
    ("index", "label"), [(0, "A"), (25, "Z"), (26, "AA"), (27, "AB"), (701, "ZZ"), (702, "AAA")]
)
def test_row_label(index: int, label: str) -> None:
    assert row_label(index) == label


def test_status_codes_cover_the_shared_statuses() -> None:
    assert set(SEAT_STATUS_CODES) == set(SEAT_STATUSES)
    assert len(set(SEAT_STATUS_CODES.values())) == len(SEAT_STATUSES)
    assert {SEAT_STATUS_LEGEND[c] for c in SEAT_STATUS_CODES.values()} == set(SEAT_STATUSES)


def test_event_page_round_trips_as_json() -> None:
    page = EventPage(items=[], next_cursor="abc")
    assert msgspec.json.decode(msgspec.json.encode(page), type=EventPage) == page


# -- the sale window ------------------------------------------------------------------------

OPENS = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)
CLOSES = datetime(2026, 12, 20, 19, 0, tzinfo=UTC)
STARTS = datetime(2026, 12, 20, 20, 0, tzinfo=UTC)


def on_sale_at(now: datetime, status: str = "published", starts: datetime = STARTS) -> None:
    ensure_on_sale(
        9,
        status=status,  # type: ignore[arg-type]
        sale_opens_at=OPENS,
        sale_closes_at=CLOSES,
        starts_at=starts,
        now=now,
    )


def test_on_sale_inside_the_window() -> None:
    on_sale_at(OPENS)  # opening instant included
    on_sale_at(CLOSES - timedelta(microseconds=1))


def test_before_the_window_is_sale_not_open() -> None:
    with pytest.raises(SaleNotOpen) as caught:
        on_sale_at(OPENS - timedelta(microseconds=1))
    assert caught.value.status == 409 and caught.value.code == "sale_not_open"
    assert caught.value.extra == {"sale_opens_at": OPENS.isoformat()}
    assert OPENS.isoformat() in caught.value.detail


@pytest.mark.parametrize(
    ("now", "status", "starts", "reason"),
    [
        (CLOSES, "published", STARTS, "ended"),  # closing instant excluded
        (STARTS + timedelta(days=1), "published", STARTS, "started"),
        # A row whose sale closes after the start still stops selling at the start.
        (CLOSES - timedelta(hours=2), "published", CLOSES - timedelta(hours=2), "started"),
        (OPENS + timedelta(days=1), "cancelled", STARTS, "cancelled"),
        (OPENS + timedelta(days=1), "draft", STARTS, "draft"),
    ],
)
def test_after_the_window_or_not_published_is_sale_closed(
    now: datetime, status: str, starts: datetime, reason: str
) -> None:
    with pytest.raises(SaleClosed) as caught:
        on_sale_at(now, status, starts)
    assert caught.value.status == 409 and caught.value.code == "sale_closed"
    assert caught.value.extra["reason"] == reason


def test_not_on_sale_errors_share_a_base() -> None:
    assert issubclass(SaleNotOpen, NotOnSale) and issubclass(SaleClosed, NotOnSale)
    assert SaleNotOpen.code != SaleClosed.code != NotOnSale.code


# -- the seed's CSV reading ------------------------------------------------------------------


def test_csv_dates_move_into_the_future_keeping_order_and_gaps() -> None:
    today = datetime(2026, 11, 28).date()
    events = read_csv(today=today)
    assert len(events) == 20
    earliest = min(e.starts_at for e in events)
    assert earliest.date() == today + timedelta(days=21)
    assert earliest.hour == 21  # Stand Up Comedy keeps its 21:00 (Lima)
    by_slug = {e.slug: e for e in events}
    gap = by_slug["final-copa-libertadores-2026"].starts_at - earliest
    assert gap == datetime(2026, 11, 23, 17) - datetime(2026, 2, 14, 21)
    assert len({e.slug for e in events}) == 20


def test_slugify() -> None:
    assert slugify("Karol G: Mañana Será Bonito Tour") == "karol-g-manana-sera-bonito-tour"
    assert slugify("Obra de Teatro: El Avaro de Molière") == "obra-de-teatro-el-avaro-de-moliere"


# -- cursor ---------------------------------------------------------------------------------


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC)
    ),
    st.integers(min_value=1, max_value=2**63 - 1),
)
def test_cursor_round_trips(when: datetime, event_id: int) -> None:
    assert decode_cursor(encode_cursor(when, event_id)) == (when, event_id)


@pytest.mark.parametrize(
    "cursor", ["", "!!!", "not-a-cursor", "W10", "WzEsMF0", "x" * 65, "WyJhIiwxXQ"]
)
def test_bad_cursor_is_invalid_input(cursor: str) -> None:
    with pytest.raises(InvalidInput) as info:
        decode_cursor(cursor)
    assert info.value.extra["field"] == "cursor"
