"""Support tools for the ``admin`` role (``core/support.py``).

``GET /api/v1/support/orders``: find orders by order id, buyer, or event and seat.
``POST /api/v1/support/orders/{id}/resend``, ``/tickets/{id}/revoke``, ``/reissue``,
``/admit``: each with a reason, each written to the audit log in the same transaction as
its change (``GET /api/v1/support/audit``).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter, QueryParameter

from api.auth.principal import Principal, requires_role
from api.checkins.controllers import MAX_EVENT_ID
from api.delivery.controllers import provide_delivery_pool, request_resend
from api.metrics import GATE_SCANS
from core.clock import epoch_ms_or_none, now_ms
from core.delivery import ResendAccepted
from core.errors import Conflict, InvalidInput, NotFound, Unavailable
from core.gate import ADMITTED, TicketRevoked, admission_refusal
from core.orders import canonical_uuid, encode, event_key, publish_wait_s, topic
from core.settings import Settings
from core.support import (
    TOPIC_REISSUE,
    AuditEntry,
    AuditPage,
    ManualAdmit,
    ReissueAccepted,
    ReissueRequested,
    RevokeResult,
    SupportAction,
    SupportOrder,
    SupportOrderList,
    SupportTicket,
    ticket_state,
)
from core.tickets import AlreadyUsed, CheckinResult

Id = Annotated[str, Parameter(max_length=64, description="A UUID.")]


def _uuid(value: str | None, name: str) -> str | None:
    if value is None:
        return None
    canonical = canonical_uuid(value)
    if canonical is None:
        raise InvalidInput(f"{name} must be a UUID", field=name)
    return canonical


async def _audit(
    conn: Any,
    actor: str,
    action: str,
    reason: str,
    *,
    order_id: str | None = None,
    ticket_id: str | None = None,
    **details: Any,
) -> None:
    await conn.execute(
        """
        INSERT INTO orders.audit_log (actor, action, order_id, ticket_id, reason, details)
        VALUES ($1, $2, $3, $4, $5, $6::jsonb)
        """,
        actor,
        action,
        order_id,
        ticket_id,
        reason,
        json.dumps(details),
    )


_TICKET_SQL = """
SELECT t.ticket_id::text AS ticket_id, t.order_id::text AS order_id, t.event_id, t.seat_id,
       t.holder, t.revoked_at, t.generation, e.status, e.starts_at, c.checked_in_at
FROM orders.tickets t
JOIN catalog.events e ON e.id = t.event_id
LEFT JOIN orders.checkins c ON c.ticket_id = t.ticket_id
WHERE t.ticket_id = $1
"""


async def _ticket(conn: Any, ticket_id: str, *, lock: bool = False) -> Any:
    canonical = canonical_uuid(ticket_id)
    row = None
    if canonical is not None:
        row = await conn.fetchrow(_TICKET_SQL + (" FOR UPDATE OF t" if lock else ""), canonical)
    if row is None:
        raise NotFound("no such ticket")
    return row


class SupportController(Controller):
    path = "/api/v1/support"
    tags = ["support"]
    guards = [requires_role("admin")]
    dependencies = {"delivery_pool": provide_delivery_pool}

    @get("/orders", summary="Find orders by id, buyer, or event and seat", cache_control=None)
    async def find_orders(
        self,
        delivery_pool: NamedDependency[Any],
        order_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        buyer: Annotated[str | None, QueryParameter(min_length=1, max_length=200)] = None,
        event_id: Annotated[int | None, QueryParameter(ge=1)] = None,
        seat: Annotated[str | None, QueryParameter(min_length=1, max_length=64)] = None,
        customer_ref: Annotated[str | None, QueryParameter(min_length=1, max_length=100)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
    ) -> SupportOrderList:
        """Orders with every ticket's state (not issued, issued, admitted, revoked), newest
        first. Give ``order_id``, or ``buyer`` (optionally with ``event_id``), or
        ``event_id`` and ``seat``, or a partner's ``customer_ref``."""
        oid = _uuid(order_id, "order_id")
        for name, value in (("buyer", buyer), ("seat", seat), ("customer_ref", customer_ref)):
            if value is not None and "\x00" in value:
                raise InvalidInput(f"{name} contains a NUL character", field=name)
        if seat is not None and event_id is None:
            raise InvalidInput("seat needs event_id", field="event_id")
        if oid is None and buyer is None and seat is None and customer_ref is None:
            raise InvalidInput("give order_id, buyer, or event_id and seat", field="order_id")
        if event_id is not None and event_id > MAX_EVENT_ID:
            return SupportOrderList(items=[])
        orders = await delivery_pool.fetch(
            """
            SELECT o.order_id::text AS order_id, o.event_id, o.buyer, o.status, o.reason,
                   o.total_minor, o.currency, o.placed_at, oc.customer_ref
            FROM orders.orders o
            LEFT JOIN orders.order_customers oc ON oc.order_id = o.order_id
            WHERE ($1::uuid IS NULL OR o.order_id = $1)
              AND ($6::text IS NULL OR oc.customer_ref = $6)
              AND ($2::text IS NULL OR o.buyer = $2)
              AND ($3::bigint IS NULL OR o.event_id = $3)
              AND ($4::text IS NULL OR EXISTS (
                    SELECT 1 FROM orders.tickets s
                    WHERE s.order_id = o.order_id AND s.event_id = $3 AND s.seat_id = $4))
            ORDER BY o.placed_at DESC, o.order_id
            LIMIT $5
            """,
            oid,
            buyer,
            event_id,
            seat,
            limit,
            customer_ref,
        )
        ids = [r["order_id"] for r in orders]
        tickets = await delivery_pool.fetch(
            """
            SELECT t.order_id::text AS order_id, t.ticket_id::text AS ticket_id, t.seat_id,
                   t.category, t.generation, t.issued_at, t.revoked_at, c.checked_in_at, c.gate
            FROM orders.tickets t LEFT JOIN orders.checkins c ON c.ticket_id = t.ticket_id
            WHERE t.order_id = ANY($1::uuid[])
            ORDER BY t.seat_id
            """,
            ids,
        )
        by_order: dict[str, list[SupportTicket]] = {}
        for t in tickets:
            by_order.setdefault(t["order_id"], []).append(
                SupportTicket(
                    ticket_id=t["ticket_id"],
                    seat_id=t["seat_id"],
                    category=t["category"],
                    state=ticket_state(
                        revoked=t["revoked_at"] is not None,
                        checked_in=t["checked_in_at"] is not None,
                        issued=t["issued_at"] is not None,
                    ),
                    generation=t["generation"],
                    issued_at=epoch_ms_or_none(t["issued_at"]),
                    checked_in_at=epoch_ms_or_none(t["checked_in_at"]),
                    gate=t["gate"],
                    revoked_at=epoch_ms_or_none(t["revoked_at"]),
                )
            )
        return SupportOrderList(
            items=[
                SupportOrder(
                    order_id=o["order_id"],
                    event_id=o["event_id"],
                    buyer=o["buyer"],
                    status=o["status"],
                    reason=o["reason"],
                    total=o["total_minor"],
                    currency=o["currency"],
                    placed_at=epoch_ms_or_none(o["placed_at"]) or 0,
                    tickets=by_order.get(o["order_id"], []),
                    customer_ref=o["customer_ref"],
                )
                for o in orders
            ]
        )

    @post(
        "/orders/{order_id:str}/resend", summary="E-mail an order's tickets again", status_code=202
    )
    async def resend(
        self,
        order_id: Id,
        data: JSONBody[SupportAction],
        state: State,
        delivery_pool: NamedDependency[Any],
        principal: NamedDependency[Principal],
    ) -> ResendAccepted:
        """Queue a resend to the buyer's current address (audited)."""
        accepted = await request_resend(state, delivery_pool, order_id, principal.sub, owner=None)
        await _audit(
            delivery_pool,
            principal.sub,
            "resend",
            data.reason,
            order_id=accepted.order_id,
            request_id=accepted.request_id,
        )
        return accepted

    @post("/tickets/{ticket_id:str}/revoke", summary="Revoke a ticket", status_code=200)
    async def revoke(
        self,
        ticket_id: Id,
        data: JSONBody[SupportAction],
        delivery_pool: NamedDependency[Any],
        principal: NamedDependency[Principal],
    ) -> RevokeResult:
        """The ticket is refused at every gate from now on (409 ``ticket_revoked``).
        Revoking a revoked ticket answers its first revocation."""
        async with delivery_pool.acquire() as conn, conn.transaction():
            row = await _ticket(conn, ticket_id, lock=True)
            if row["revoked_at"] is not None:
                return RevokeResult(row["ticket_id"], epoch_ms_or_none(row["revoked_at"]) or 0)
            revoked_at = await conn.fetchval(
                "UPDATE orders.tickets SET revoked_at = clock_timestamp() WHERE ticket_id = $1"
                " RETURNING revoked_at",
                row["ticket_id"],
            )
            await _audit(
                conn,
                principal.sub,
                "revoke",
                data.reason,
                order_id=row["order_id"],
                ticket_id=row["ticket_id"],
                seat_id=row["seat_id"],
            )
        return RevokeResult(row["ticket_id"], epoch_ms_or_none(revoked_at) or 0)

    @post("/tickets/{ticket_id:str}/reissue", summary="Reissue a ticket", status_code=202)
    async def reissue(
        self,
        ticket_id: Id,
        data: JSONBody[SupportAction],
        state: State,
        delivery_pool: NamedDependency[Any],
        principal: NamedDependency[Principal],
    ) -> ReissueAccepted:
        """A new token of the next generation, signed by the ticket issuer; every older
        token of this ticket is refused from now on as revoked."""
        settings: Settings = state.settings
        kafka = getattr(state, "kafka", None)
        if kafka is None:
            raise Unavailable("reissue is not ready, retry shortly")
        producer = kafka.producer()  # 503 before changing anything if Kafka is away
        async with delivery_pool.acquire() as conn, conn.transaction():
            row = await _ticket(conn, ticket_id, lock=True)
            if row["revoked_at"] is not None:
                raise TicketRevoked("this ticket is revoked: there is nothing to reissue")
            if row["checked_in_at"] is not None:
                raise Conflict("this ticket was already admitted; a new one would enter twice")
            generation = await conn.fetchval(
                """
                UPDATE orders.tickets
                SET generation = generation + 1, token = NULL, kid = NULL, issued_at = NULL,
                    reissued_at = clock_timestamp()
                WHERE ticket_id = $1 RETURNING generation
                """,
                row["ticket_id"],
            )
            await _audit(
                conn,
                principal.sub,
                "reissue",
                data.reason,
                order_id=row["order_id"],
                ticket_id=row["ticket_id"],
                generation=generation,
            )
        request = ReissueRequested(
            ticket_id=row["ticket_id"],
            order_id=row["order_id"],
            event_id=row["event_id"],
            seat_id=row["seat_id"],
            holder=row["holder"],
            generation=generation,
            requested_by=principal.sub,
        )
        try:
            await asyncio.wait_for(
                producer.send_and_wait(
                    topic(settings.kafka.topic_prefix, TOPIC_REISSUE),
                    value=encode(request),
                    key=event_key(row["event_id"]),
                ),
                timeout=publish_wait_s(settings.kafka.request_timeout_s),
            )
        except (TimeoutError, OSError) as exc:
            # The old token is already refused; asking again signs the next generation.
            raise Unavailable("the new token could not be requested; reissue again") from exc
        return ReissueAccepted(ticket_id=row["ticket_id"], generation=generation)

    @post("/tickets/{ticket_id:str}/admit", summary="Admit a ticket by hand", status_code=201)
    async def admit(
        self,
        ticket_id: Id,
        data: JSONBody[ManualAdmit],
        state: State,
        delivery_pool: NamedDependency[Any],
        principal: NamedDependency[Principal],
    ) -> CheckinResult:
        """Admit without the code (its holder shows ID, the phone died...): the gate's
        rules still apply (revoked, cancelled, over, once), the reason is kept."""
        settings: Settings = state.settings
        async with delivery_pool.acquire() as conn, conn.transaction():
            row = await _ticket(conn, ticket_id, lock=True)
            refusal = admission_refusal(
                session_event=row["event_id"],
                ticket_event=row["event_id"],
                event_status=row["status"],
                starts_at_ms=epoch_ms_or_none(row["starts_at"]),
                revoked=row["revoked_at"] is not None,
                now_ms=now_ms(),
                closes_after_start_s=settings.gate.closes_after_start_s,
            )
            if refusal is not None:
                raise refusal
            if row["checked_in_at"] is not None:
                raise AlreadyUsed(
                    "this ticket was already admitted",
                    ticket_id=row["ticket_id"],
                    seat_id=row["seat_id"],
                    checked_in_at=epoch_ms_or_none(row["checked_in_at"]),
                )
            admitted = await conn.fetchval(
                """
                INSERT INTO orders.checkins (ticket_id, scanner, gate, manual_reason)
                VALUES ($1, $2, $3, $4) RETURNING checked_in_at
                """,
                row["ticket_id"],
                principal.sub,
                data.gate,
                data.reason,
            )
            await conn.execute(
                """
                INSERT INTO orders.scans (event_id, gate, scanner, ticket_id, seat_id, result)
                VALUES ($1, $2, $3, $4, $5, 'admitted')
                """,
                row["event_id"],
                data.gate,
                principal.sub,
                row["ticket_id"],
                row["seat_id"],
            )
            await _audit(
                conn,
                principal.sub,
                "manual_admit",
                data.reason,
                order_id=row["order_id"],
                ticket_id=row["ticket_id"],
                gate=data.gate,
            )
        GATE_SCANS.labels(gate=data.gate, result=ADMITTED).inc()
        return CheckinResult(
            ticket_id=row["ticket_id"],
            event_id=row["event_id"],
            seat_id=row["seat_id"],
            checked_in_at=epoch_ms_or_none(admitted) or 0,
            gate=data.gate,
        )

    @get("/audit", summary="The support audit log", cache_control=None)
    async def audit(
        self,
        delivery_pool: NamedDependency[Any],
        order_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        ticket_id: Annotated[str | None, QueryParameter(max_length=64)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> AuditPage:
        """Support actions, newest first, for one order or ticket, or all."""
        rows = await delivery_pool.fetch(
            """
            SELECT audit_id, at, actor, action, order_id::text AS order_id,
                   ticket_id::text AS ticket_id, reason, details
            FROM orders.audit_log
            WHERE ($1::uuid IS NULL OR order_id = $1) AND ($2::uuid IS NULL OR ticket_id = $2)
            ORDER BY audit_id DESC LIMIT $3
            """,
            _uuid(order_id, "order_id"),
            _uuid(ticket_id, "ticket_id"),
            limit,
        )
        return AuditPage(
            items=[
                AuditEntry(
                    audit_id=r["audit_id"],
                    at=epoch_ms_or_none(r["at"]) or 0,
                    actor=r["actor"],
                    action=r["action"],
                    order_id=r["order_id"],
                    ticket_id=r["ticket_id"],
                    reason=r["reason"],
                    details=json.loads(r["details"]),
                )
                for r in rows
            ]
        )


route_handlers = [SupportController]
