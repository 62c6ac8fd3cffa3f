"""Check-in at the gate (roles scanner and admin).

``POST /api/v1/checkins {"token", "event_id", "gate"}``: a scan by a scanner session
bound to an event and a gate. The token is verified against the ticket keys (422 if
forged or malformed); a ticket of another event, of a cancelled or finished event, or a
revoked one is refused with 409 and a problem naming why (``core.gate``). Then one
``INSERT ... ON CONFLICT DO NOTHING RETURNING`` admits it: of any number of concurrent
scans of one ticket exactly one gets a row back; every other scan gets 409
``already_used`` with the time and gate of the first scan. Every scan, admitted or not,
is one row of the scan log (``orders.scans``).

``GET /api/v1/events/{id}/gate``: what a scanner device keeps for offline checks (the
event, the admitted and the revoked tickets, or only the changes ``?since=``).
``GET /api/v1/events/{id}/scans``: the scan log, newest first. ``GET
/api/v1/events/{id}/gates``: per-gate counts.
"""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from litestar import Controller, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody, PathParameter, QueryParameter

from api.auth.principal import Principal, requires_role
from api.metrics import CHECKINS, GATE_SCANS
from api.tickets.keys import ticket_jwks
from core.clock import epoch_ms, epoch_ms_or_none, now_ms
from core.errors import DomainError, InvalidInput, NotFound, Unavailable
from core.gate import (
    ADMITTED,
    GATE_NAME_PATTERN,
    Admission,
    GateCount,
    GateCounts,
    GateEvent,
    GateSnapshot,
    OfflineScan,
    Reissued,
    ScanEntry,
    ScanLogPage,
    TicketRevoked,
    admission_refusal,
    admits_until,
)
from core.settings import Settings
from core.tickets import (
    AlreadyUsed,
    CheckinRequest,
    CheckinResult,
    InvalidTicket,
    TicketClaims,
    verify_ticket,
)

EventId = Annotated[int, PathParameter(ge=1, description="The event's id.")]
# Beyond bigint no event exists (the schema sets no upper bound: see api/catalog).
MAX_EVENT_ID = 2**63 - 1
# Instants are ms since epoch; this bound (year 33658) keeps them inside timestamptz.
MAX_INSTANT_MS = 10**15
# A device's clock may run ahead: the changes of the last seconds are sent again.
SNAPSHOT_OVERLAP_MS = 5000


async def provide_gate_pool(state: State) -> Any:
    """DI ``gate_pool``: the PostgreSQL pool (503 while the app is starting)."""
    pool = getattr(state, "db_pool", None)
    if pool is None:
        raise Unavailable("check-in is not ready, retry shortly")
    return pool


_LOOKUP_SQL = """
SELECT t.revoked_at IS NOT NULL AS revoked, t.generation, e.status, e.starts_at,
       c.checked_in_at, c.gate
FROM orders.tickets t
JOIN catalog.events e ON e.id = t.event_id
LEFT JOIN orders.checkins c ON c.ticket_id = t.ticket_id
WHERE t.ticket_id = $1 AND t.event_id = $2 AND t.seat_id = $3
"""

_ADMIT_SQL = """
INSERT INTO orders.checkins (ticket_id, scanner, gate)
SELECT t.ticket_id, $4, $5 FROM orders.tickets t
WHERE t.ticket_id = $1 AND t.event_id = $2 AND t.seat_id = $3 AND t.revoked_at IS NULL
  AND t.generation = $6
ON CONFLICT (ticket_id) DO NOTHING
RETURNING checked_in_at
"""

_LOG_SQL = """
INSERT INTO orders.scans (event_id, gate, scanner, ticket_id, seat_id, result, device_at)
VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7::bigint IS NULL THEN NULL
                                     ELSE to_timestamp($7::bigint / 1000.0) END)
"""


async def _log(
    conn: Any,
    data: CheckinRequest,
    scanner: str,
    claims: TicketClaims | None,
    result: str,
) -> None:
    await conn.execute(
        _LOG_SQL,
        data.event_id,
        data.gate,
        scanner,
        claims.ticket if claims else None,
        claims.seat if claims else None,
        result,
        data.scanned_at,
    )


def _count(gate: str, result: str) -> None:
    CHECKINS.labels(result="ok" if result == ADMITTED else result).inc()
    GATE_SCANS.labels(gate=gate, result=result).inc()


class CheckinController(Controller):
    path = "/api/v1/checkins"
    tags = ["check-in"]
    guards = [requires_role("scanner", "admin")]
    dependencies = {"gate_pool": provide_gate_pool}

    @post("/", summary="Admit a ticket at the gate", status_code=201)
    async def check_in(
        self,
        data: JSONBody[CheckinRequest],
        state: State,
        gate_pool: NamedDependency[Any],
        principal: NamedDependency[Principal],
    ) -> CheckinResult:
        """Admit once: 201 the first time; 409 ``already_used`` after, or ``wrong_event``,
        ``event_cancelled``, ``event_over``, ``ticket_revoked``; 422 for a bad token."""
        settings: Settings = state.settings
        try:
            claims = verify_ticket(data.token, ticket_jwks(state))
        except InvalidTicket as exc:
            await _log(gate_pool, data, principal.sub, None, exc.code)
            _count(data.gate, exc.code)
            raise
        async with gate_pool.acquire() as conn:
            try:
                result = await self._admit(conn, data, claims, principal.sub, settings)
            except DomainError as exc:
                await _log(conn, data, principal.sub, claims, exc.code)
                _count(data.gate, exc.code)
                raise
        _count(data.gate, ADMITTED)
        return result

    async def _admit(
        self,
        conn: asyncpg.Connection,
        data: CheckinRequest,
        claims: TicketClaims,
        scanner: str,
        settings: Settings,
    ) -> CheckinResult:
        now = now_ms()
        if claims.event != data.event_id:
            refusal = admission_refusal(
                session_event=data.event_id,
                ticket_event=claims.event,
                event_status=None,
                starts_at_ms=None,
                revoked=False,
                now_ms=now,
                closes_after_start_s=settings.gate.closes_after_start_s,
            )
            assert refusal is not None
            raise refusal
        row = await conn.fetchrow(_LOOKUP_SQL, claims.ticket, claims.event, claims.seat)
        if row is None:
            # Signed by us but not a ticket we sold (or it does not match its seat).
            raise InvalidTicket("this ticket is not valid for any sold seat")
        refusal = admission_refusal(
            session_event=data.event_id,
            ticket_event=claims.event,
            event_status=row["status"],
            starts_at_ms=epoch_ms(row["starts_at"]),
            # A token of an older generation was replaced by a reissue.
            revoked=row["revoked"] or claims.gen != row["generation"],
            now_ms=now,
            closes_after_start_s=settings.gate.closes_after_start_s,
        )
        if refusal is not None:
            raise refusal
        if row["checked_in_at"] is None:
            async with conn.transaction():
                admitted = await conn.fetchval(
                    _ADMIT_SQL,
                    claims.ticket,
                    claims.event,
                    claims.seat,
                    scanner,
                    data.gate,
                    claims.gen,
                )
                if admitted is not None:
                    await _log(conn, data, scanner, claims, ADMITTED)
                    return CheckinResult(
                        ticket_id=claims.ticket,
                        event_id=claims.event,
                        seat_id=claims.seat,
                        checked_in_at=epoch_ms(admitted),
                        gate=data.gate,
                    )
            # Another scan won the race, or the ticket was revoked in between.
            row = await conn.fetchrow(_LOOKUP_SQL, claims.ticket, claims.event, claims.seat)
            if row is None or row["checked_in_at"] is None:
                raise TicketRevoked("this ticket was revoked; the buyer has a newer one or none")
        raise AlreadyUsed(
            "this ticket was already admitted",
            ticket_id=claims.ticket,
            seat_id=claims.seat,
            checked_in_at=epoch_ms(row["checked_in_at"]),
            gate=row["gate"],
        )


async def _gate_event(conn: Any, event_id: int, settings: Settings) -> GateEvent:
    if event_id > MAX_EVENT_ID:
        raise NotFound(f"event {event_id} does not exist")
    row = await conn.fetchrow(
        "SELECT id, title, status, starts_at FROM catalog.events WHERE id = $1", event_id
    )
    if row is None:
        raise NotFound(f"event {event_id} does not exist")
    starts = epoch_ms(row["starts_at"])
    return GateEvent(
        event_id=row["id"],
        title=row["title"],
        status=row["status"],
        starts_at=starts,
        admits_until=admits_until(starts, settings.gate.closes_after_start_s),
    )


def _cursor(value: str | None) -> int | None:
    if value is None:
        return None
    # ASCII digits only: str.isdigit() also takes "³", which int() refuses.
    if not (value.isascii() and value.isdigit()) or int(value) > MAX_EVENT_ID:
        raise InvalidInput("cursor is malformed", field="cursor")
    return int(value)


class GateController(Controller):
    path = "/api/v1/events/{event_id:int}"
    tags = ["check-in"]
    guards = [requires_role("scanner", "admin")]
    dependencies = {"gate_pool": provide_gate_pool}

    @get("/gate", summary="What a scanner keeps for offline checks")
    async def snapshot(
        self,
        event_id: EventId,
        state: State,
        gate_pool: NamedDependency[Any],
        since: Annotated[
            int | None,
            QueryParameter(
                ge=0, le=MAX_INSTANT_MS, description="Only changes after this instant (ms)."
            ),
        ] = None,
    ) -> GateSnapshot:
        """The event (status, start, when its gates close), the tickets admitted and the
        tickets revoked: all of them, or those changed after ``since`` (the ``as_of`` of
        the previous answer)."""
        settings: Settings = state.settings
        after = since or 0
        async with gate_pool.acquire() as conn:
            now = await conn.fetchval("SELECT clock_timestamp()")
            event = await _gate_event(conn, event_id, settings)
            rows = await conn.fetch(
                """
                SELECT c.ticket_id::text AS ticket_id, t.seat_id, c.gate, c.checked_in_at
                FROM orders.checkins c JOIN orders.tickets t ON t.ticket_id = c.ticket_id
                WHERE t.event_id = $1 AND c.checked_in_at > to_timestamp($2 / 1000.0)
                ORDER BY c.checked_in_at DESC
                LIMIT $3
                """,
                event_id,
                after,
                settings.gate.snapshot_max_admissions,
            )
            revoked = await conn.fetch(
                """
                SELECT ticket_id::text AS ticket_id FROM orders.tickets
                WHERE event_id = $1 AND revoked_at IS NOT NULL
                  AND revoked_at > to_timestamp($2 / 1000.0)
                """,
                event_id,
                after,
            )
            reissued = await conn.fetch(
                """
                SELECT ticket_id::text AS ticket_id, generation FROM orders.tickets
                WHERE event_id = $1 AND reissued_at IS NOT NULL
                  AND reissued_at > to_timestamp($2 / 1000.0)
                """,
                event_id,
                after,
            )
        return GateSnapshot(
            event=event,
            admitted=[
                Admission(r["ticket_id"], r["seat_id"], r["gate"], epoch_ms(r["checked_in_at"]))
                for r in rows
            ],
            revoked=[r["ticket_id"] for r in revoked],
            as_of=epoch_ms(now) - SNAPSHOT_OVERLAP_MS,
            reissued=[Reissued(r["ticket_id"], r["generation"]) for r in reissued],
        )

    @post("/scans", summary="Report scans judged offline", status_code=201)
    async def report(
        self,
        event_id: EventId,
        data: JSONBody[list[OfflineScan]],
        gate_pool: NamedDependency[Any],
        principal: NamedDependency[Principal],
    ) -> dict[str, int]:
        """Refusals a scanner judged while offline (another event's ticket, one it had
        admitted already...), for the scan log. They admit nothing; admissions go through
        ``POST /checkins``. At most 500 per request."""
        if event_id > MAX_EVENT_ID:
            raise NotFound(f"event {event_id} does not exist")
        if len(data) > 500:
            raise InvalidInput("at most 500 scans per request", field="body")
        if data:
            await gate_pool.executemany(
                """
                INSERT INTO orders.scans (event_id, gate, scanner, ticket_id, seat_id, result,
                                          device_at)
                VALUES ($1, $2, $3, $4, $5, $6, to_timestamp($7::bigint / 1000.0))
                """,
                [
                    (
                        event_id,
                        s.gate,
                        principal.sub,
                        s.ticket_id,
                        s.seat_id,
                        s.result,
                        s.scanned_at,
                    )
                    for s in data
                ],
            )
        for s in data:
            GATE_SCANS.labels(gate=s.gate, result=s.result).inc()
        return {"recorded": len(data)}

    @get("/scans", summary="The scan log of an event")
    async def scans(
        self,
        event_id: EventId,
        gate_pool: NamedDependency[Any],
        gate: Annotated[
            str | None,
            QueryParameter(pattern=GATE_NAME_PATTERN, max_length=40, description="One gate."),
        ] = None,
        result: Annotated[
            str | None,
            QueryParameter(
                pattern=r"^[a-z_]{1,40}$", description="One result: admitted, already_used…"
            ),
        ] = None,
        cursor: Annotated[str | None, QueryParameter(max_length=20)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=500)] = 100,
    ) -> ScanLogPage:
        """Every scan at this event's gates, newest first: who, where, when, which
        ticket, and the result. ``next_cursor`` pages back."""
        before = _cursor(cursor)
        if event_id > MAX_EVENT_ID:
            raise NotFound(f"event {event_id} does not exist")
        rows = await gate_pool.fetch(
            """
            SELECT scan_id, event_id, gate, scanner, ticket_id::text AS ticket_id, seat_id,
                   result, scanned_at, device_at
            FROM orders.scans
            WHERE event_id = $1 AND ($2::text IS NULL OR gate = $2)
              AND ($3::text IS NULL OR result = $3) AND ($4::bigint IS NULL OR scan_id < $4)
            ORDER BY scan_id DESC
            LIMIT $5
            """,
            event_id,
            gate,
            result,
            before,
            limit + 1,
        )
        items = [
            ScanEntry(
                scan_id=r["scan_id"],
                event_id=r["event_id"],
                gate=r["gate"],
                scanner=r["scanner"],
                ticket_id=r["ticket_id"],
                seat_id=r["seat_id"],
                result=r["result"],
                scanned_at=epoch_ms(r["scanned_at"]),
                device_at=epoch_ms_or_none(r["device_at"]),
            )
            for r in rows[:limit]
        ]
        more = len(rows) > limit
        return ScanLogPage(items=items, next_cursor=str(items[-1].scan_id) if more else None)

    @get("/gates", summary="Per-gate counts of an event")
    async def gates(
        self, event_id: EventId, state: State, gate_pool: NamedDependency[Any]
    ) -> GateCounts:
        """Scans admitted and refused at each gate, the last scan's time, and how many of
        the event's sold tickets are in."""
        settings: Settings = state.settings
        async with gate_pool.acquire() as conn:
            await _gate_event(conn, event_id, settings)  # 404 for an unknown event
            rows = await conn.fetch(
                """
                SELECT gate,
                       count(*) FILTER (WHERE result = 'admitted') AS admitted,
                       count(*) FILTER (WHERE result <> 'admitted') AS refused,
                       max(scanned_at) AS last_scan_at
                FROM orders.scans WHERE event_id = $1
                GROUP BY gate ORDER BY gate
                """,
                event_id,
            )
            totals = await conn.fetchrow(
                """
                SELECT count(*) FILTER (WHERE t.revoked_at IS NULL) AS sold,
                       count(c.ticket_id) AS admitted
                FROM orders.tickets t LEFT JOIN orders.checkins c ON c.ticket_id = t.ticket_id
                WHERE t.event_id = $1
                """,
                event_id,
            )
        return GateCounts(
            event_id=event_id,
            sold=totals["sold"],
            admitted=totals["admitted"],
            gates=[
                GateCount(
                    gate=r["gate"],
                    admitted=r["admitted"],
                    refused=r["refused"],
                    last_scan_at=epoch_ms_or_none(r["last_scan_at"]),
                )
                for r in rows
            ],
        )


route_handlers = [CheckinController, GateController]
