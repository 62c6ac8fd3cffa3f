"""Venues, seat maps and the event lifecycle: the organizer's side of the catalog.

A seat map is sections -> rows -> seats. Each seat has a number (1..9999, increasing
along the row, gaps allowed), a price category code and two accessibility
flags: ``wheelchair`` (a wheelchair space) and ``companion`` (the seat of the person who
comes with a wheelchair user). A seat's wire id is ``<section>-<row>-<number>``, so
renumbering a seat is losing it and gaining another.

Two interchangeable forms (docs/decisions/0902-venue-seat-maps.md):

- JSON, ``SeatMapDoc``;
- CSV, one line per seat with the header ``CSV_COLUMNS``; sections and rows appear in
  the order of their first line, seats in line order.

``map_from_csv(map_to_csv(doc)) == doc`` for every valid map.

The lifecycle (docs/decisions/0903-event-lifecycle.md)::

    draft --publish--> published --pause--> paused --resume--> published
    published|paused --close--> closed
    draft|published|paused --cancel--> cancelled

``published`` is *on sale* between ``sale_opens_at`` and ``sale_closes_at``. Every state
but ``published`` refuses holds; ``cancelled`` also refuses orders of existing holds.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Annotated, Final, Literal

import msgspec

from core.errors import Conflict, InvalidInput
from core.events import EventStatus, SectionPlan

MAX_MAP_SEATS: Final = 150_000
CSV_COLUMNS: Final = (
    "section",
    "section_name",
    "row",
    "number",
    "category",
    "wheelchair",
    "companion",
)

SectionCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{1,8}$")]
RowLabel = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9]{1,4}$")]
CategoryCode = Annotated[str, msgspec.Meta(pattern=r"^[A-Z][A-Z0-9_]{0,15}$")]
SeatNumber = Annotated[int, msgspec.Meta(ge=1, le=9999)]
# Printable (PostgreSQL text cannot hold NUL; a CSV cell must not carry a line break).
Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


class MapSeat(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    number: SeatNumber
    category: CategoryCode
    wheelchair: bool = False
    companion: bool = False


class MapRow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    label: RowLabel
    seats: Annotated[list[MapSeat], msgspec.Meta(min_length=1)]


class MapSection(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    code: SectionCode
    name: Name
    rows: Annotated[list[MapRow], msgspec.Meta(min_length=1)]


class SeatMapDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A whole seat map, front of the venue first (best available prefers earlier rows)."""

    sections: Annotated[list[MapSection], msgspec.Meta(min_length=1)]


class MapStats(msgspec.Struct, frozen=True):
    seats: int
    categories: list[str]  # in order of first appearance
    wheelchair: int
    companion: int


def validate_map(doc: SeatMapDoc) -> MapStats:
    """Check what the types cannot: unique sections, rows and numbers, and the size.

    InvalidInput names the offending place as ``field`` (``sections[1].rows[0].seats[3]
    .number``)."""
    seen_sections: set[str] = set()
    categories: dict[str, None] = {}
    seats = wheelchair = companion = 0
    for s, section in enumerate(doc.sections):
        if section.code in seen_sections:
            raise InvalidInput(
                f"section {section.code!r} appears twice", field=f"sections[{s}].code"
            )
        seen_sections.add(section.code)
        seen_rows: set[str] = set()
        for r, row in enumerate(section.rows):
            if row.label in seen_rows:
                raise InvalidInput(
                    f"row {row.label!r} appears twice in section {section.code!r}",
                    field=f"sections[{s}].rows[{r}].label",
                )
            seen_rows.add(row.label)
            last = 0
            for n, seat in enumerate(row.seats):
                if seat.number <= last:
                    raise InvalidInput(
                        f"seat {section.code}-{row.label}-{seat.number}: numbers must increase"
                        f" along the row (gaps are allowed), it follows {last}",
                        field=f"sections[{s}].rows[{r}].seats[{n}].number",
                    )
                if seat.wheelchair and seat.companion:
                    raise InvalidInput(
                        f"seat {section.code}-{row.label}-{seat.number} cannot be both a"
                        " wheelchair space and a companion seat",
                        field=f"sections[{s}].rows[{r}].seats[{n}].companion",
                    )
                last = seat.number
                categories[seat.category] = None
                wheelchair += seat.wheelchair
                companion += seat.companion
            seats += len(row.seats)
            if seats > MAX_MAP_SEATS:
                raise InvalidInput(
                    f"a seat map holds at most {MAX_MAP_SEATS} seats", field="sections"
                )
    return MapStats(seats, list(categories), wheelchair, companion)


def seat_ids(doc: SeatMapDoc) -> list[str]:
    """Every seat's wire id, in map order."""
    return [
        f"{section.code}-{row.label}-{seat.number}"
        for section in doc.sections
        for row in section.rows
        for seat in row.seats
    ]


def lost_seats(doc: SeatMapDoc, kept: Iterable[str]) -> list[str]:
    """The seats of ``kept`` (e.g. the sold ones) that ``doc`` no longer has, sorted."""
    present = set(seat_ids(doc))
    return sorted(s for s in set(kept) if s not in present)


def map_from_plan(plan: Sequence[SectionPlan]) -> SeatMapDoc:
    """The map a generated plan (``core.events.plan_seat_map``, the seed's) describes."""
    return SeatMapDoc(
        sections=[
            MapSection(
                code=s.code,
                name=s.name,
                rows=[
                    MapRow(r.label, [MapSeat(n, s.category) for n in range(1, r.seats + 1)])
                    for r in s.rows
                ],
            )
            for s in plan
        ]
    )


# -- CSV ------------------------------------------------------------------------------------


def map_to_csv(doc: SeatMapDoc) -> str:
    """The map as CSV (header ``CSV_COLUMNS``, one line per seat, ``\\r\\n`` line ends)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for section in doc.sections:
        for row in section.rows:
            for seat in row.seats:
                writer.writerow(
                    (
                        section.code,
                        section.name,
                        row.label,
                        seat.number,
                        seat.category,
                        "true" if seat.wheelchair else "false",
                        "true" if seat.companion else "false",
                    )
                )
    return out.getvalue()


_TRUE = {"true", "1", "yes", "y"}
_FALSE = {"false", "0", "no", "n", ""}


def _flag(value: str, line: int, column: str) -> bool:
    v = value.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise InvalidInput(
        f"line {line}: {column} must be true or false, not {value!r}",
        field=f"line {line}: {column}",
    )


def map_from_csv(text: str) -> SeatMapDoc:
    """Parse a CSV seat map; InvalidInput names the line and column that is wrong.

    The same rules as the JSON form apply (``validate_map`` is the caller's next step)."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None or [h.strip().lower() for h in header] != list(CSV_COLUMNS):
        raise InvalidInput(
            f"the first line must be the header {','.join(CSV_COLUMNS)}", field="line 1"
        )
    sections: dict[str, tuple[str, dict[str, list[MapSeat]]]] = {}
    for line, values in enumerate(reader, start=2):
        if not values or values == [""]:
            continue
        if len(values) != len(CSV_COLUMNS):
            raise InvalidInput(
                f"line {line}: expected {len(CSV_COLUMNS)} columns, found {len(values)}",
                field=f"line {line}",
            )
        code, name, label, number, category, wheelchair, companion = (v.strip() for v in values)
        try:
            seat = msgspec.convert(
                {
                    "number": int(number) if number.isdigit() else number,
                    "category": category,
                    "wheelchair": _flag(wheelchair, line, "wheelchair"),
                    "companion": _flag(companion, line, "companion"),
                },
                MapSeat,
            )
            msgspec.convert({"label": label, "seats": [seat]}, MapRow)
            msgspec.convert({"code": code, "name": name, "rows": []}, _SectionHead)
        except msgspec.ValidationError as exc:
            column = _csv_column(str(exc))
            raise InvalidInput(f"line {line}: {exc}", field=f"line {line}: {column}") from None
        known = sections.get(code)
        if known is None:
            known = sections[code] = (name, {})
        elif known[0] != name:
            raise InvalidInput(
                f"line {line}: section {code!r} was named {known[0]!r} before, not {name!r}",
                field=f"line {line}: section_name",
            )
        known[1].setdefault(label, []).append(seat)
    if not sections:
        raise InvalidInput("the seat map has no seats", field="line 2")
    return SeatMapDoc(
        sections=[
            MapSection(code, name, [MapRow(label, seats) for label, seats in rows.items()])
            for code, (name, rows) in sections.items()
        ]
    )


class _SectionHead(msgspec.Struct, frozen=True):
    code: SectionCode
    name: Name
    rows: list[MapRow]


def _csv_column(message: str) -> str:
    """The CSV column a msgspec message (``... - at `$.label```) is about."""
    names = {"label": "row", "code": "section", "name": "section_name"}
    for key in ("number", "category", "label", "code", "name"):
        if f"$.{key}" in message:
            return names.get(key, key)
    return "row"


# -- the event lifecycle --------------------------------------------------------------------

Action = Literal["publish", "pause", "resume", "close", "cancel"]

# action -> (states it may start from, state it leads to)
TRANSITIONS: Final[dict[Action, tuple[frozenset[EventStatus], EventStatus]]] = {
    "publish": (frozenset({"draft"}), "published"),
    "pause": (frozenset({"published"}), "paused"),
    "resume": (frozenset({"paused"}), "published"),
    "close": (frozenset({"published", "paused"}), "closed"),
    "cancel": (frozenset({"draft", "published", "paused"}), "cancelled"),
}

# What the inventory's sale gate says in each state (None: open). hold.lua and
# best_available.lua refuse every hold while a gate is set; confirm.lua refuses orders
# only when it is 'cancelled'.
GATES: Final[dict[EventStatus, str | None]] = {
    "draft": "draft",
    "published": None,
    "paused": "paused",
    "closed": "closed",
    "cancelled": "cancelled",
}


def next_status(event_id: int, status: EventStatus, action: Action) -> EventStatus:
    """The state ``action`` leads to from ``status``; Conflict (409) when it may not."""
    allowed, target = TRANSITIONS[action]
    if status not in allowed:
        raise Conflict(
            f"event {event_id} is {status}: it cannot {action}"
            f" (only from {', '.join(sorted(allowed))})",
            status=status,
            action=action,
        )
    return target
