"""Seat ids, categories and versions: pure rules, no I/O."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.inventory import decode_state
from core.seats import (
    SeatRef,
    parse_seat_id,
    validate_category,
    validate_seat_ids,
    version_key,
)


def test_parse_seat_id() -> None:
    ref = parse_seat_id("101-C-14")
    assert ref == SeatRef("101", "C", 14)
    assert ref.seat_id == "101-C-14"
    assert ref.row_id == "101-C"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "101-C",
        "101-C-14-2",
        "101--14",
        "123456789-A-1",
        "1-ABCDE-1",
        "1-A-12345",
        "1-A-01",
        "1-A-x",
        "1 -A-1",
        "1-A-1\n",
        14,
        None,
        "ü-A-1",
    ],
)
def test_malformed_seat_ids_are_invalid_input(bad: object) -> None:
    with pytest.raises(InvalidInput):
        parse_seat_id(bad)


@given(
    section=st.text("ABC0123456789xyz", min_size=1, max_size=8),
    row=st.text("ABCDZ019", min_size=1, max_size=4),
    number=st.integers(1, 9999),
)
def test_every_well_formed_seat_id_round_trips(section: str, row: str, number: int) -> None:
    seat = f"{section}-{row}-{number}"
    assert parse_seat_id(seat).seat_id == seat


def test_validate_seat_ids() -> None:
    assert validate_seat_ids(["1-A-1", "1-A-2"], 6) == ["1-A-1", "1-A-2"]
    with pytest.raises(InvalidInput, match="at least one"):
        validate_seat_ids([], 6)
    with pytest.raises(InvalidInput, match="at most 2"):
        validate_seat_ids(["1-A-1", "1-A-2", "1-A-3"], 2)
    with pytest.raises(InvalidInput, match="twice"):
        validate_seat_ids(["1-A-1", "1-A-1"], 6)
    with pytest.raises(InvalidInput):
        validate_seat_ids("1-A-1", 6)


def test_validate_category() -> None:
    assert validate_category("VIP") == "VIP"
    for bad in ["", "vip", "V|P", "A" * 17, "1VIP", None]:
        with pytest.raises(InvalidInput):
            validate_category(bad)


def test_versions_compare_numerically() -> None:
    assert version_key("1700000000000-10") > version_key("1700000000000-9")
    assert version_key("1700000000001-0") > version_key("1700000000000-99")
    assert version_key("0-0") == (0, 0)
    with pytest.raises(InvalidInput):
        version_key("abc")


def test_decode_state_applies_lazy_expiry() -> None:
    now = 1_800_000_000_000
    assert decode_state(f"h|{now + 1}|h5.0.0123456789abcdef", now) == "held"
    assert decode_state(f"h|{now}|h5.0.0123456789abcdef", now) == "free"  # expired
    assert decode_state("p|6f1c0e1e-0000-4000-8000-000000000001", now) == "pending"
    assert decode_state("s|6f1c0e1e-0000-4000-8000-000000000001", now) == "sold"
    assert decode_state("", now) == "free"
