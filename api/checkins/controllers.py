"""Check-in at the gate: ``POST /api/v1/checkins {"token"}`` (role scanner).

The token is verified against the ticket keys (422 if forged or malformed), then one
``INSERT ... ON CONFLICT DO NOTHING RETURNING`` admits it: of any number of concurrent
scans of one ticket exactly one gets a row back; every other scan gets 409
``already_used`` with the time of the first scan.
"""

from __future__ import annotations

from litestar import Controller, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody

from api.auth.principal import Principal, requires_role
from api.metrics import CHECKINS
from api.orders.deps import ORDER_SERVICE_DEPENDENCY
from api.orders.service import OrderService
from api.tickets.keys import ticket_jwks
from core.errors import DomainError
from core.tickets import AlreadyUsed, CheckinRequest, CheckinResult, InvalidTicket, verify_ticket


def _ms(value: object) -> int:
    return int(value.timestamp() * 1000)  # type: ignore[attr-defined]


class CheckinController(Controller):
    path = "/api/v1/checkins"
    tags = ["check-in"]
    guards = [requires_role("scanner", "admin")]
    dependencies = {"orders": ORDER_SERVICE_DEPENDENCY}

    @post("/", summary="Admit a ticket at the gate", status_code=201)
    async def check_in(
        self,
        data: JSONBody[CheckinRequest],
        state: State,
        orders: NamedDependency[OrderService],
        principal: NamedDependency[Principal],
    ) -> CheckinResult:
        """Admit once: 201 the first time, 409 ``already_used`` after, 422 for a bad token."""
        try:
            result = await self._admit(data.token, state, orders, principal.sub)
        except DomainError as exc:
            CHECKINS.labels(result=exc.code).inc()
            raise
        CHECKINS.labels(result="ok").inc()
        return result

    async def _admit(
        self, token: str, state: State, orders: OrderService, scanner: str
    ) -> CheckinResult:
        claims = verify_ticket(token, ticket_jwks(state))
        async with orders.pool.acquire() as conn:
            row = await conn.fetchrow(
                """
                INSERT INTO orders.checkins (ticket_id, scanner)
                SELECT t.ticket_id, $4 FROM orders.tickets t
                WHERE t.ticket_id = $1 AND t.event_id = $2 AND t.seat_id = $3
                ON CONFLICT (ticket_id) DO NOTHING
                RETURNING checked_in_at
                """,
                claims.ticket,
                claims.event,
                claims.seat,
                scanner,
            )
            if row is not None:
                return CheckinResult(
                    ticket_id=claims.ticket,
                    event_id=claims.event,
                    seat_id=claims.seat,
                    checked_in_at=_ms(row["checked_in_at"]),
                )
            first = await conn.fetchval(
                "SELECT checked_in_at FROM orders.checkins WHERE ticket_id = $1", claims.ticket
            )
        if first is None:
            # Signed by us but not a ticket we sold (or it does not match its seat).
            raise InvalidTicket("this ticket is not valid for any sold seat")
        raise AlreadyUsed(
            "this ticket was already admitted",
            ticket_id=claims.ticket,
            seat_id=claims.seat,
            checked_in_at=_ms(first),
        )


route_handlers = [CheckinController]
