"""Seat ids, categories and versions: pure rules, no I/O."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from core.errors import InvalidInput
from core.inventory import Inventory, PartitionPlan, decode_state
from core.inventory_link import ScriptLink
from core.seats import (
    SEAT_ID_RE,
    SeatRef,
    is_seat_id,
    parse_seat_id,
    seat_row_and_number,
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


def reference_rule(value: str) -> bool:
    """The seat-id contract spelled out without a regex: section 1-8 and row 1-4 ASCII
    alphanumerics, number 1-4 digits written without leading zeros, nothing else."""
    parts = value.split("-")
    if len(parts) != 3:
        return False
    section, row, number = parts

    def alnum(text: str, longest: int) -> bool:
        return 0 < len(text) <= longest and all(c in _ALNUM for c in text)

    digits = 0 < len(number) <= 4 and all(c in "0123456789" for c in number)
    return (
        alnum(section, 8)
        and alnum(row, 4)
        and digits
        and (number == "0" or not number.startswith("0"))
    )


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
# Near misses: the characters of seat ids plus the ones a loose rule lets through.
_NEAR = st.text("AZaz0019-\n \t\r\u00fc\u0663", max_size=16)

LOOSE_BUT_WRONG = ["1-A-1\n", "1-A-01", "1-A-00", "1-A-0001", "\n1-A-1", "1-A-1\r", "1-A-\u0661"]


@example("1-A-1\n")
@example("1-A-01")
@example("1-A-0")
@given(_NEAR)
def test_every_entry_point_follows_the_one_seat_id_rule(value: str) -> None:
    expected = reference_rule(value)
    assert is_seat_id(value) is expected
    assert (SEAT_ID_RE.match(value) is not None) is expected
    assert (SEAT_ID_RE.fullmatch(value) is not None) is expected
    assert (SEAT_ID_RE.search(value) is not None) is expected
    assert (seat_row_and_number(value) is not None) is expected
    if expected:
        assert parse_seat_id(value).seat_id == value
    else:
        with pytest.raises(InvalidInput):
            parse_seat_id(value)


@pytest.mark.parametrize("bad", LOOSE_BUT_WRONG)
def test_trailing_newline_and_leading_zeros_are_refused_everywhere(bad: str) -> None:
    assert not is_seat_id(bad)
    assert seat_row_and_number(bad) is None
    with pytest.raises(InvalidInput):
        validate_seat_ids([bad], 6)
    with pytest.raises(InvalidInput):
        PartitionPlan(count=2).partition_of(bad)


class _NoRedis:
    """Stands in for the cluster client where validation must refuse before any call
    (the inventory's link has no node to reach: a script call fails with Unavailable)."""


@pytest.mark.parametrize("bad", LOOSE_BUT_WRONG)
async def test_the_inventory_refuses_them_before_redis(bad: str) -> None:
    inventory = Inventory(_NoRedis(), link=ScriptLink([]))  # type: ignore[arg-type]
    order = "6f1c0e1e-0000-4000-8000-000000000001"
    with pytest.raises(InvalidInput):
        await inventory.hold(5, [bad], "alice")
    with pytest.raises(InvalidInput):
        await inventory.load(5, 0, [(bad, "VIP")])
    with pytest.raises(InvalidInput):
        await inventory.load(5, 0, [("1-A-1", "VIP")], sold={bad: order})
    with pytest.raises(InvalidInput):
        await inventory.mark_sold(5, 0, order, seats=[bad])


def test_seat_row_and_number() -> None:
    assert seat_row_and_number("101-C-14") == ("101-C", 14)
    assert seat_row_and_number("A1-BB-9999") == ("A1-BB", 9999)
    assert seat_row_and_number("101-C-") is None


def test_no_other_module_defines_seat_ids_or_statuses() -> None:
    """core/seats.py owns the seat-id rule and the status names; a copy elsewhere drifts
    (a copy in core/events.py once accepted "1-A-1\n" and "1-A-01")."""
    root = Path(__file__).resolve().parents[2]
    copies = re.compile(
        r"^\s*(SeatStatus|SEAT_ID_RE|SEAT_STATUSES)\s*[:=]"
        r"|^\s*def (parse_seat_id|is_seat_id)\b"
        r"|Literal\[\s*\"free\",\s*\"held\"",
        re.MULTILINE,
    )
    found: list[Any] = []
    for folder in ("core", "api", "workers", "migrations"):
        for path in sorted((root / folder).rglob("*.py")):
            if path == root / "core" / "seats.py":
                continue
            found += [
                f"{path.relative_to(root)}: {m.group(0).strip()}"
                for m in copies.finditer(path.read_text(encoding="utf-8"))
            ]
    assert found == []


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
