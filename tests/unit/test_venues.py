"""Seat maps (core.venues): validation, the CSV form and the event lifecycle rules."""

from __future__ import annotations

import msgspec
import pytest

from core.errors import Conflict, InvalidInput
from core.events import plan_seat_map
from core.venues import (
    MapRow,
    MapSeat,
    MapSection,
    SeatMapDoc,
    lost_seats,
    map_from_csv,
    map_from_plan,
    map_to_csv,
    next_status,
    seat_ids,
    validate_map,
)
from migrations.seed import layout_seats, read_csv


@pytest.mark.parametrize("event", read_csv(), ids=lambda e: e.slug)
def test_every_seed_map_round_trips_through_csv_and_json(event: object) -> None:
    plan = plan_seat_map(event.capacity)  # type: ignore[attr-defined]
    doc = map_from_plan(plan)
    stats = validate_map(doc)
    assert stats.seats == event.capacity  # type: ignore[attr-defined]
    # The seat ids and their order are the ones the seed loads into Redis.
    assert seat_ids(doc) == [seat for seat, _ in layout_seats(plan)]
    text = map_to_csv(doc)
    assert map_from_csv(text) == doc
    assert map_to_csv(map_from_csv(text)) == text
    assert msgspec.json.decode(msgspec.json.encode(doc), type=SeatMapDoc) == doc


def _doc(*numbers: int, wheelchair: int | None = None) -> SeatMapDoc:
    seats = [MapSeat(n, "GENERAL", wheelchair=n == wheelchair) for n in numbers]
    return SeatMapDoc([MapSection("A", "Stalls", [MapRow("1", seats)])])


def test_numbering_with_gaps_and_flags_round_trips() -> None:
    doc = SeatMapDoc(
        [
            MapSection(
                "A",
                'Stalls, "left"',
                [
                    MapRow(
                        "1",
                        [
                            MapSeat(1, "VIP", wheelchair=True),
                            MapSeat(2, "VIP", companion=True),
                            MapSeat(9, "VIP"),
                        ],
                    )
                ],
            )
        ]
    )
    stats = validate_map(doc)
    assert (stats.seats, stats.wheelchair, stats.companion) == (3, 1, 1)
    assert map_from_csv(map_to_csv(doc)) == doc


def test_numbers_must_increase_along_a_row() -> None:
    with pytest.raises(InvalidInput) as err:
        validate_map(_doc(1, 3, 3))
    assert err.value.extra["field"] == "sections[0].rows[0].seats[2].number"
    with pytest.raises(InvalidInput):
        validate_map(_doc(5, 4))


def test_a_seat_is_not_both_wheelchair_and_companion() -> None:
    doc = SeatMapDoc(
        [MapSection("A", "S", [MapRow("1", [MapSeat(1, "VIP", wheelchair=True, companion=True)])])]
    )
    with pytest.raises(InvalidInput) as err:
        validate_map(doc)
    assert err.value.extra["field"].endswith("seats[0].companion")


def test_duplicate_sections_and_rows_are_named() -> None:
    row = MapRow("1", [MapSeat(1, "VIP")])
    with pytest.raises(InvalidInput) as err:
        validate_map(SeatMapDoc([MapSection("A", "x", [row]), MapSection("A", "y", [row])]))
    assert err.value.extra["field"] == "sections[1].code"
    with pytest.raises(InvalidInput) as err:
        validate_map(SeatMapDoc([MapSection("A", "x", [row, row])]))
    assert err.value.extra["field"] == "sections[0].rows[1].label"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("section,row\r\n", "line 1"),
        ("section,section_name,row,number,category,wheelchair,companion\r\n", "line 2"),
        ("section,section_name,row,number,category,wheelchair,companion\r\nA,S,1,0,VIP,,\r\n",
         "line 2: number"),
        ("section,section_name,row,number,category,wheelchair,companion\r\nA,S,1,1,vip,,\r\n",
         "line 2: category"),
        ("section,section_name,row,number,category,wheelchair,companion\r\nA,S,1,1,VIP,maybe,\r\n",
         "line 2: wheelchair"),
        ("section,section_name,row,number,category,wheelchair,companion\r\nA,S,1,1,VIP\r\n",
         "line 2"),
        ("section,section_name,row,number,category,wheelchair,companion\r\n"
         "A,S,1,1,VIP,,\r\nA,T,1,2,VIP,,\r\n", "line 3: section_name"),
        ("section,section_name,row,number,category,wheelchair,companion\r\nA-1,S,1,1,VIP,,\r\n",
         "line 2: section"),
    ],
)  # fmt: skip
def test_bad_csv_names_line_and_column(text: str, field: str) -> None:
    with pytest.raises(InvalidInput) as err:
        map_from_csv(text)
    assert err.value.extra["field"] == field


def test_lost_seats_are_the_kept_seats_a_map_no_longer_has() -> None:
    assert lost_seats(_doc(1, 2, 4), ["A-1-2", "A-1-3", "B-1-1"]) == ["A-1-3", "B-1-1"]
    assert lost_seats(_doc(1, 2), ["A-1-2"]) == []


def test_lifecycle_transitions() -> None:
    assert next_status(1, "draft", "publish") == "published"
    assert next_status(1, "published", "pause") == "paused"
    assert next_status(1, "paused", "resume") == "published"
    assert next_status(1, "paused", "close") == "closed"
    assert next_status(1, "published", "cancel") == "cancelled"
    for status, action in [("draft", "pause"), ("closed", "resume"), ("cancelled", "publish"),
                           ("closed", "cancel"), ("published", "publish")]:  # fmt: skip
        with pytest.raises(Conflict):
            next_status(1, status, action)  # type: ignore[arg-type]
