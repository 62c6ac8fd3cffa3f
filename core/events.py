"""The catalog: event categories, events, price categories and the seat map on the wire.

Pricing rules (docs/decisions/0203-price-categories.md): every event has the same three
price categories, derived from its base price::

    VIP       2.0 x base   the front 10% of the seats
    PLATINUM  1.5 x base   the next 30%
    GENERAL   1.0 x base   the remaining 60%

Prices are integer minor units (céntimos of PEN), rounded half-up to a whole minor unit.

The seat map (``GET /api/v1/events/{id}/seats``) is compact: sections -> rows, and each row
carries one status character per seat (``SEAT_STATUS_CODES``) instead of one object per
seat, so an 80,000-seat stadium is ~100 KB of JSON (a few KB gzipped).
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Final, Literal

import msgspec

from core.errors import InvalidInput, SaleClosed, SaleNotOpen
from core.seats import SeatStatus

CURRENCY: Final = "PEN"

EventStatus = Literal["draft", "published", "paused", "closed", "cancelled"]

# One character per seat status in SeatRow.status. The statuses themselves are
# core.seats' (SeatStatus, SEAT_STATUSES); this only picks a letter for each.
SEAT_STATUS_CODES: Final[dict[SeatStatus, str]] = {
    "free": "f",
    "held": "h",
    "pending": "p",
    "sold": "s",
}
SEAT_STATUS_LEGEND: Final[dict[str, SeatStatus]] = {v: k for k, v in SEAT_STATUS_CODES.items()}


class PriceTier(msgspec.Struct, frozen=True):
    """A pricing rule: a category's multiple of the base price and its share of the seats."""

    code: str
    name: str
    factor: Decimal
    share: Decimal  # fraction of the capacity, front of the venue first


# Front to back: seat maps are laid out in this order.
PRICE_TIERS: Final[tuple[PriceTier, ...]] = (
    PriceTier("VIP", "VIP", Decimal("2.0"), Decimal("0.10")),
    PriceTier("PLATINUM", "Platinum", Decimal("1.5"), Decimal("0.30")),
    PriceTier("GENERAL", "General", Decimal("1.0"), Decimal("0.60")),
)


# -- wire types -----------------------------------------------------------------------------


class Category(msgspec.Struct, frozen=True):
    """An event category (CONCERT, SPORTS...)."""

    code: str
    name: str


class PriceCategory(msgspec.Struct, frozen=True):
    """A price category of one event."""

    code: str
    name: str
    price_minor: int
    currency: str = CURRENCY


class CategoryAvailability(msgspec.Struct, frozen=True):
    """A price category with the seats still free in it (live, from the inventory)."""

    code: str
    name: str
    price_minor: int
    currency: str
    # None when the event's inventory is not loaded in Redis (cold start).
    available: int | None


class Venue(msgspec.Struct, frozen=True):
    name: str
    address: str


class EventSummary(msgspec.Struct, frozen=True):
    """An event in the list: enough to render a card."""

    id: int
    title: str
    category: str
    venue: Venue
    starts_at: datetime
    sale_opens_at: datetime
    sale_closes_at: datetime
    status: EventStatus
    capacity: int
    prices: list[CategoryAvailability]


class Event(msgspec.Struct, frozen=True):
    """One event with its price categories and the live availability of each."""

    id: int
    title: str
    category: str
    venue: Venue
    starts_at: datetime
    sale_opens_at: datetime
    sale_closes_at: datetime
    status: EventStatus
    capacity: int
    partitions: int
    prices: list[CategoryAvailability]


class EventPage(msgspec.Struct, frozen=True):
    """One page of events; ``next_cursor`` is None on the last page."""

    items: list[EventSummary]
    next_cursor: str | None


class SeatRow(msgspec.Struct, frozen=True):
    """A run of consecutive seats of one row and one price category.

    Seat numbers are ``first, first + 1, ...``; ``status`` has one character per seat
    (see ``SEAT_STATUS_CODES``). A row with a gap or mixed categories is sent as several
    runs with the same ``row``.
    """

    row: str
    first: int
    category: str
    status: str


class SeatSection(msgspec.Struct, frozen=True):
    code: str
    name: str
    rows: list[SeatRow]


class SeatMap(msgspec.Struct, frozen=True):
    """The layout of an event merged with the live status of every seat.

    ``version`` is the id of the last change-stream entry included; a client applies the
    stream's deltas after it (WebSocket) to stay current.
    """

    event_id: int
    version: str
    legend: dict[str, str]
    categories: list[PriceCategory]
    sections: list[SeatSection]


# -- rules ----------------------------------------------------------------------------------


def parse_price_minor(text: str) -> int:
    """``"89.99"`` -> ``8999``. At most two decimals, strictly positive."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise InvalidInput(f"price {text!r} is not a number", field="price") from None
    if not value.is_finite() or value <= 0:
        raise InvalidInput(f"price {text!r} must be positive", field="price")
    minor = value * 100
    if minor != minor.to_integral_value():
        raise InvalidInput(f"price {text!r} has more than two decimals", field="price")
    return int(minor)


def tier_price(base_price_minor: int, factor: Decimal) -> int:
    """``base * factor`` rounded half-up to a whole minor unit."""
    return int((Decimal(base_price_minor) * factor).to_integral_value(rounding=ROUND_HALF_UP))


def price_categories(base_price_minor: int, currency: str = CURRENCY) -> list[PriceCategory]:
    """The price categories of an event with this base price, front of the venue first."""
    if base_price_minor <= 0:
        raise InvalidInput("base price must be positive", field="base_price")
    return [
        PriceCategory(t.code, t.name, tier_price(base_price_minor, t.factor), currency)
        for t in PRICE_TIERS
    ]


def seats_per_category(capacity: int) -> dict[str, int]:
    """How many of ``capacity`` seats each price category gets; the counts sum to capacity.

    Largest-remainder rounding of the tiers' shares, so 300 seats give 30/90/180 and no
    seat is lost to rounding. Every category gets at least one seat when capacity allows.
    """
    if capacity <= 0:
        raise InvalidInput("capacity must be positive", field="capacity")
    exact = [t.share * capacity for t in PRICE_TIERS]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: capacity - sum(counts)]:
        counts[i] += 1
    # Tiny venues: borrow from the largest category so no category is empty.
    for i, n in enumerate(counts):
        if n == 0 and capacity >= len(counts):
            donor = max(range(len(counts)), key=lambda j: counts[j])
            counts[donor] -= 1
            counts[i] = 1
    return {t.code: n for t, n in zip(PRICE_TIERS, counts, strict=True)}


# -- the sale window ------------------------------------------------------------------------


def ensure_on_sale(
    event_id: int,
    *,
    status: EventStatus,
    sale_opens_at: datetime,
    sale_closes_at: datetime,
    starts_at: datetime,
    now: datetime,
) -> None:
    """Raise unless buyers may hold seats of this event at ``now``.

    On sale means: status ``published`` and ``sale_opens_at <= now < sale_closes_at``, and
    the event has not started (the catalog keeps ``sale_closes_at <= starts_at``; the start
    is checked too, so a bad row cannot sell seats for a show already under way).
    ``SaleNotOpen`` (409 ``sale_not_open``, with ``sale_opens_at``) before the window;
    ``SaleClosed`` (409 ``sale_closed``, with ``reason``: ended, started or the status)
    after it or when the event is not published.
    """
    if status != "published":
        raise SaleClosed(f"event {event_id} is {status}: its seats are not on sale", reason=status)
    if now < sale_opens_at:
        raise SaleNotOpen(
            f"the sale of event {event_id} opens at {sale_opens_at.isoformat()}",
            sale_opens_at=sale_opens_at.isoformat(),
        )
    if now >= starts_at:
        raise SaleClosed(
            f"event {event_id} started at {starts_at.isoformat()}: the sale is over",
            reason="started",
            sale_closes_at=min(sale_closes_at, starts_at).isoformat(),
        )
    if now >= sale_closes_at:
        raise SaleClosed(
            f"the sale of event {event_id} closed at {sale_closes_at.isoformat()}",
            reason="ended",
            sale_closes_at=sale_closes_at.isoformat(),
        )


# -- seat map layout ------------------------------------------------------------------------


# Section codes are <level><01..99> with up to 1,000 seats each; GENERAL (60%) must fit.
MAX_GENERATED_CAPACITY: Final = 150_000


class RowPlan(msgspec.Struct, frozen=True):
    label: str
    seats: int  # numbered 1..seats


class SectionPlan(msgspec.Struct, frozen=True):
    code: str
    name: str
    category: str
    rows: list[RowPlan]


def row_label(index: int) -> str:
    """0 -> "A", 25 -> "Z", 26 -> "AA", 27 -> "AB"... (spreadsheet-style)."""
    label = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        label = chr(ord("A") + rem) + label
    return label


def _even_split(total: int, parts: int) -> list[int]:
    """``total`` split in ``parts`` counts differing by at most one (larger ones last)."""
    small, extra = divmod(total, parts)
    return [small + (1 if i >= parts - extra else 0) for i in range(parts)]


def plan_seat_map(capacity: int) -> list[SectionPlan]:
    """Sections, rows and price categories for a venue of ``capacity`` seats, front first.

    Exactly ``capacity`` seats. Each price category gets its own sections, numbered by level
    (VIP 101, 102...; PLATINUM 201...; GENERAL 301...). Rows hold 20 seats in small halls,
    30 in arenas and 40 in stadiums, and sections up to 10/20/25 rows, so a stadium of
    80,000 seats has 80 sections of 1,000. Counts are spread evenly, so rows of one
    section differ by at most one seat.
    """
    if not 0 < capacity <= MAX_GENERATED_CAPACITY:
        raise InvalidInput(
            f"capacity must be 1..{MAX_GENERATED_CAPACITY} for a generated map", field="capacity"
        )
    if capacity <= 1500:
        per_row, rows_per_section = 20, 10
    elif capacity <= 10_000:
        per_row, rows_per_section = 30, 20
    else:
        per_row, rows_per_section = 40, 25
    section_size = per_row * rows_per_section
    tiers = {t.code: t for t in PRICE_TIERS}
    plan: list[SectionPlan] = []
    for level, (code, count) in enumerate(seats_per_category(capacity).items(), start=1):
        if count == 0:
            continue
        n_sections = math.ceil(count / section_size)
        assert n_sections <= 99  # section codes <level><2 digits>; MAX_GENERATED_CAPACITY
        for s, in_section in enumerate(_even_split(count, n_sections), start=1):
            section = f"{level}{s:02d}"
            n_rows = math.ceil(in_section / per_row)
            rows = [RowPlan(row_label(r), n) for r, n in enumerate(_even_split(in_section, n_rows))]
            plan.append(SectionPlan(section, f"{tiers[code].name} {section}", code, rows))
    return plan
