"""core.gate: which ticket a gate admits, in the order staff can act on the reasons."""

from __future__ import annotations

import msgspec
import pytest

from core.gate import (
    EventCancelled,
    EventOver,
    TicketRevoked,
    WrongEvent,
    admission_refusal,
    admits_until,
)
from core.tickets import CheckinRequest

HOUR_MS = 3600 * 1000


def refusal(**changes: object) -> object:
    args: dict[str, object] = {
        "session_event": 7,
        "ticket_event": 7,
        "event_status": "published",
        "starts_at_ms": 10 * HOUR_MS,
        "revoked": False,
        "now_ms": 9 * HOUR_MS,
        "closes_after_start_s": 6 * 3600,
    }
    args.update(changes)
    return admission_refusal(**args)  # type: ignore[arg-type]


def test_a_valid_ticket_of_the_session_event_is_admitted() -> None:
    assert refusal() is None
    # Until the gate closes, after the start too.
    assert refusal(now_ms=16 * HOUR_MS) is None


def test_each_reason() -> None:
    assert isinstance(refusal(ticket_event=8), WrongEvent)
    assert isinstance(refusal(revoked=True), TicketRevoked)
    assert isinstance(refusal(event_status="cancelled"), EventCancelled)
    over = refusal(now_ms=16 * HOUR_MS + 1)
    assert isinstance(over, EventOver)
    assert over.extra["admits_until"] == admits_until(10 * HOUR_MS, 6 * 3600)


def test_another_events_ticket_is_named_first() -> None:
    wrong = refusal(ticket_event=8, revoked=True, event_status="cancelled")
    assert isinstance(wrong, WrongEvent)
    assert wrong.status == 409 and wrong.extra == {"ticket_event_id": 8, "event_id": 7}


@pytest.mark.parametrize("gate", ["north-1", "Puerta 3", "VIP", "a.b_c"])
def test_gate_names(gate: str) -> None:
    body = msgspec.json.encode({"token": "t", "event_id": 1, "gate": gate})
    assert msgspec.json.decode(body, type=CheckinRequest).gate == gate


@pytest.mark.parametrize("gate", ["", " lead", "north/1", "x" * 41, "puerta\n1"])
def test_bad_gate_names_are_refused(gate: str) -> None:
    body = msgspec.json.encode({"token": "t", "event_id": 1, "gate": gate})
    with pytest.raises(msgspec.ValidationError, match="gate"):
        msgspec.json.decode(body, type=CheckinRequest)
