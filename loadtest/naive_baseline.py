"""BASELINE ONLY — not part of TicketBuster. Never deploy this.

The naive design we compare against in ``make bench``: the same seat-hold
semantics as TicketBuster (all-or-nothing, per-buyer limit per event, expiry
from the server's clock, 409 naming the taken seats), but kept in PostgreSQL
with row locks (``SELECT ... FOR UPDATE``) and a conditional ``UPDATE``,
behind the same stack (Litestar + msgspec, served by Granian with uvloop,
started with the same server settings as the real API).

It is written the way a careful first version would be — one transaction per
hold, seats locked in a fixed order (no deadlocks), the buyer serialised with
a transaction-scoped advisory lock — not as a straw man. It owns the schema
``naive`` in the database of ``TB_DATABASE_URL`` and creates it itself.

Bearer tokens are verified like the real API does (EdDSA signature, audience)
against ``TB_NAIVE_JWK`` (the dev issuer's public JWK, JSON; the bench harness
sets it) or the JWKS at ``TB_NAIVE_JWKS_URL``; with neither, only decoded.

Run: ``granian --interface asgi --factory --loop uvloop
loadtest.naive_baseline:create_app``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import jwt
import msgspec
from litestar import Litestar, Request, Response, get, post
from litestar.datastructures import State
from litestar.exceptions import HTTPException

from core.settings import load_settings

SCHEMA_SQL = """
CREATE SCHEMA IF NOT EXISTS naive;
CREATE TABLE IF NOT EXISTS naive.seats (
    event_id        bigint      NOT NULL,
    seat_id         text        NOT NULL,
    category        text        NOT NULL,
    sold            boolean     NOT NULL DEFAULT false,
    hold_id         text,
    hold_buyer      text,
    hold_expires_at timestamptz,
    PRIMARY KEY (event_id, seat_id)
);
CREATE INDEX IF NOT EXISTS seats_buyer_idx ON naive.seats (event_id, hold_buyer)
    WHERE hold_buyer IS NOT NULL;
CREATE TABLE IF NOT EXISTS naive.holds (
    hold_id    text        PRIMARY KEY,
    event_id   bigint      NOT NULL,
    buyer      text        NOT NULL,
    seats      text[]      NOT NULL,
    expires_at timestamptz NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
"""

# Lock the seats (in seat order, so two holds never deadlock) and read, in the
# same statement, how many live seats the buyer already has for the event.
LOCK_SEATS_SQL = """
SELECT seat_id,
       sold OR coalesce(hold_expires_at > now(), false) AS taken,
       (SELECT count(*) FROM naive.seats b
         WHERE b.event_id = $1 AND b.hold_buyer = $3
           AND (b.sold OR b.hold_expires_at > now())) AS buyer_seats
  FROM naive.seats
 WHERE event_id = $1 AND seat_id = ANY($2::text[])
 ORDER BY seat_id
   FOR UPDATE
"""

# The conditional UPDATE: it only touches seats that are still free, and
# records the hold in the same statement.
HOLD_SQL = """
WITH held AS (
    UPDATE naive.seats
       SET hold_id = $3, hold_buyer = $4,
           hold_expires_at = now() + make_interval(secs => $5)
     WHERE event_id = $1 AND seat_id = ANY($2::text[])
       AND NOT sold AND (hold_expires_at IS NULL OR hold_expires_at <= now())
 RETURNING seat_id, hold_expires_at
)
INSERT INTO naive.holds (hold_id, event_id, buyer, seats, expires_at)
SELECT $3, $1, $4, array_agg(seat_id ORDER BY seat_id), max(hold_expires_at) FROM held
RETURNING cardinality(seats) AS n, (extract(epoch FROM expires_at) * 1000)::bigint AS expires_ms
"""


class HoldRequest(msgspec.Struct, forbid_unknown_fields=True):
    seats: list[str]


class HoldCreated(msgspec.Struct):
    hold_id: str
    event_id: int
    seats: list[str]
    expires_at: int


class Problem(msgspec.Struct, omit_defaults=True):
    type: str
    title: str
    status: int
    detail: str
    seats: list[str] | None = None


def _problem(status: int, code: str, title: str, detail: str, **extra: Any) -> Response[Problem]:
    body = Problem(f"https://ticketbuster.dev/problems/{code}", title, status, detail, **extra)
    return Response(body, status_code=status, media_type="application/problem+json")


async def prepare_event(
    dsn: str, event_id: int, seats: Sequence[tuple[str, str]], *, reset: bool = True
) -> None:
    """Create the ``naive`` schema and (re)load one event's seats, all free."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(SCHEMA_SQL)
        async with conn.transaction():
            if reset:
                await conn.execute("DELETE FROM naive.holds WHERE event_id = $1", event_id)
                await conn.execute("DELETE FROM naive.seats WHERE event_id = $1", event_id)
            await conn.copy_records_to_table(
                "seats",
                schema_name="naive",
                columns=["event_id", "seat_id", "category"],
                records=[(event_id, seat, category) for seat, category in seats],
            )
        await conn.execute("ANALYZE naive.seats")
    finally:
        await conn.close()


class _Buyers:
    """Reads the buyer from the bearer token, verifying it when a JWKS is configured."""

    def __init__(self, jwk: str, jwks_url: str, audience: str) -> None:
        self._key = jwt.PyJWK.from_json(jwk).key if jwk else None
        self._jwks = jwt.PyJWKClient(jwks_url) if jwks_url and not jwk else None
        self._audience = audience

    def buyer(self, request: Request[Any, Any, Any]) -> str:
        auth = request.headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise HTTPException(status_code=401, detail="bearer token required")
        try:
            key = self._key
            if key is None and self._jwks is not None:
                key = self._jwks.get_signing_key_from_jwt(token).key
            if key is None:
                claims = jwt.decode(token, options={"verify_signature": False})
            else:
                claims = jwt.decode(
                    token, key, algorithms=["EdDSA", "ES256", "RS256"], audience=self._audience
                )
        except jwt.PyJWTError as exc:
            raise HTTPException(status_code=401, detail="invalid token") from exc
        return str(claims["sub"])


@post("/api/v1/events/{event_id:int}/holds", status_code=201)
async def create_hold(
    event_id: int, data: HoldRequest, request: Request[Any, Any, Any], state: State
) -> Response[Any]:
    """Hold explicit seats: all or nothing, in one PostgreSQL transaction."""
    buyer = state.buyers.buyer(request)
    seats = sorted(set(data.seats))
    limit: int = state.max_seats_per_buyer
    if not seats or len(seats) != len(data.seats) or len(seats) > limit:
        return _problem(422, "invalid_input", "Invalid input", "seats: 1 to 6 distinct seats")
    hold_id = f"h{event_id}.0.{secrets.token_hex(8)}"
    pool: asyncpg.Pool = state.pool
    async with pool.acquire() as conn, conn.transaction():
        # One buyer at a time per event, so two concurrent holds cannot both pass the limit.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, $2))", buyer, event_id
        )
        rows = await conn.fetch(LOCK_SEATS_SQL, event_id, seats, buyer)
        if len(rows) != len(seats):
            known = {r["seat_id"] for r in rows}
            unknown = [s for s in seats if s not in known]
            return _problem(422, "invalid_input", "Invalid input", f"unknown seats: {unknown}")
        taken = [r["seat_id"] for r in rows if r["taken"]]
        if taken:
            return _problem(409, "seat_unavailable", "Seats unavailable", "taken", seats=taken)
        if rows[0]["buyer_seats"] + len(seats) > limit:
            return _problem(429, "limit_exceeded", "Seat limit reached", f"at most {limit}")
        row = await conn.fetchrow(HOLD_SQL, event_id, seats, hold_id, buyer, state.ttl_s)
        assert row is not None and row["n"] == len(seats)  # the rows are locked: cannot fail
    return Response(HoldCreated(hold_id, event_id, seats, row["expires_ms"]), status_code=201)


@get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def create_app() -> Litestar:
    """The naive baseline app (BASELINE ONLY)."""
    settings = load_settings()
    dsn = settings.database.url
    pool_size = int(os.environ.get("TB_NAIVE_POOL", "20"))

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(SCHEMA_SQL)
        finally:
            await conn.close()
        app.state.pool = await asyncpg.create_pool(dsn, min_size=pool_size, max_size=pool_size)
        try:
            yield
        finally:
            await app.state.pool.close()

    state = State(
        {
            "buyers": _Buyers(
                os.environ.get("TB_NAIVE_JWK", ""),
                os.environ.get("TB_NAIVE_JWKS_URL", ""),
                settings.auth.audience,
            ),
            "max_seats_per_buyer": settings.holds.max_seats_per_buyer,
            "ttl_s": settings.holds.ttl_s,
        }
    )
    return Litestar(
        route_handlers=[create_hold, healthz], lifespan=[lifespan], state=state, debug=False
    )
