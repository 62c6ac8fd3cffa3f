"""Support tools (role ``admin``): find orders, resend, revoke, reissue, admit by hand.

Every action needs a reason and writes one row of the audit log (``orders.audit_log``):
who, when, what and why. A revoked ticket is refused at every gate (``ticket_revoked``);
a reissued one keeps its id and seat, gets a new token of the next generation from the
ticket issuer, and the older tokens are refused as revoked.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from core.gate import GateName

Reason = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=500,
        pattern=r"^[^\x00]+$",
        description="Why (kept in the audit log).",
    ),
]
# Reissue requests: the API publishes, the ticket issuer signs (workers/issuer.py).
TOPIC_REISSUE = "tickets.reissue"
AuditAction = Literal["resend", "revoke", "reissue", "manual_admit"]
TicketState = Literal["not_issued", "issued", "admitted", "revoked"]


class SupportAction(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    reason: Reason


class ManualAdmit(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Admit a ticket without its code (a dead phone, a torn print)."""

    reason: Reason
    gate: GateName


class SupportTicket(msgspec.Struct, frozen=True):
    ticket_id: str
    seat_id: str
    category: str
    state: TicketState
    generation: int
    issued_at: int | None
    checked_in_at: int | None
    gate: str | None
    revoked_at: int | None


class SupportOrder(msgspec.Struct, frozen=True):
    order_id: str
    event_id: int
    buyer: str
    status: str
    reason: str | None
    total: int
    currency: str
    placed_at: int
    tickets: list[SupportTicket]
    # A partner's reference for its end customer (PUT /orders/{id}/customer).
    customer_ref: str | None = None


class SupportOrderList(msgspec.Struct, frozen=True):
    items: list[SupportOrder]


class AuditEntry(msgspec.Struct, frozen=True):
    audit_id: int
    at: int
    actor: str
    action: str
    order_id: str | None
    ticket_id: str | None
    reason: str
    details: dict[str, object]


class AuditPage(msgspec.Struct, frozen=True):
    items: list[AuditEntry]


class RevokeResult(msgspec.Struct, frozen=True):
    ticket_id: str
    revoked_at: int


class ReissueRequested(msgspec.Struct, frozen=True):
    """Sign a new token for a ticket (topic ``tickets.reissue``, consumed by the issuer)."""

    ticket_id: str
    order_id: str
    event_id: int
    seat_id: str
    holder: str
    generation: int
    requested_by: str
    v: int = 1


class ReissueAccepted(msgspec.Struct, frozen=True):
    ticket_id: str
    generation: int
    status: str = "reissuing"


def ticket_state(*, revoked: bool, checked_in: bool, issued: bool) -> TicketState:
    """What support sees first: revoked, then admitted, then whether a token exists."""
    if revoked:
        return "revoked"
    if checked_in:
        return "admitted"
    return "issued" if issued else "not_issued"
