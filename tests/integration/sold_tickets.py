"""Sold tickets for tests of what happens after a sale (the gate, support, delivery).

The purchase itself is tested end to end elsewhere (tests/e2e/test_purchase.py); these
helpers write a confirmed order and its issued tickets straight into PostgreSQL, the way
the persister and the ticket issuer leave them, and sign the tokens with the key the API
under test publishes.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg

from core.orders import ticket_id_for
from core.tickets import TicketClaims, generate_private_key_pem, sign_ticket, signing_key


@dataclass(frozen=True)
class SoldTicket:
    ticket_id: str
    order_id: str
    event_id: int
    seat_id: str
    holder: str
    token: str


def signing_pem(path: Path) -> bytes:
    """The private key at ``path`` (created if missing, as the API and issuer do in dev)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(generate_private_key_pem())
    return path.read_bytes()


async def sell(
    dsn: str,
    event_id: int,
    seats: list[str],
    buyer: str,
    pem: bytes,
    *,
    category: str = "GENERAL",
    price_minor: int = 10_000,
    issued: bool = True,
) -> list[SoldTicket]:
    """One confirmed order of ``seats`` for ``buyer`` with a signed token per ticket
    (stored on its row unless ``issued`` is false: the issuer has not run yet; the
    token it will store is returned all the same)."""
    order_id = str(uuid.uuid4())
    key = signing_key(pem)
    now = int(time.time())
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                """
                INSERT INTO orders.orders (order_id, event_id, hold_id, buyer, status, seats,
                                           total_minor, placed_at)
                VALUES ($1, $2, $3, $4, 'confirmed', $5::jsonb, $6, now())
                """,
                order_id,
                event_id,
                f"test-hold-{uuid.uuid4().hex[:8]}",
                buyer,
                json.dumps(
                    [{"seat_id": s, "category": category, "price": price_minor} for s in seats]
                ),
                price_minor * len(seats),
            )
            sold = []
            for seat in seats:
                ticket_id = ticket_id_for(order_id, seat)
                token = sign_ticket(
                    TicketClaims(
                        ticket=ticket_id,
                        event=event_id,
                        seat=seat,
                        holder=buyer,
                        order=order_id,
                        iat=now,
                    ),
                    key,
                )
                await conn.execute(
                    """
                    INSERT INTO orders.tickets (ticket_id, order_id, event_id, seat_id, holder,
                                                category, price_minor, token, kid, issued_at)
                    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,
                            CASE WHEN $8::text IS NULL THEN NULL ELSE now() END)
                    """,
                    ticket_id,
                    order_id,
                    event_id,
                    seat,
                    buyer,
                    category,
                    price_minor,
                    token if issued else None,
                    key.kid if issued else None,
                )
                sold.append(SoldTicket(ticket_id, order_id, event_id, seat, buyer, token))
    finally:
        await conn.close()
    return sold


async def move_event_to_the_past(dsn: str, event_id: int, days: int = 3) -> None:
    """The event started ``days`` ago (its sale closed before that)."""
    starts = datetime.now(UTC) - timedelta(days=days)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            """
            UPDATE catalog.events SET sale_opens_at = $2, sale_closes_at = $3, starts_at = $4
            WHERE id = $1
            """,
            event_id,
            starts - timedelta(days=2),
            starts - timedelta(hours=1),
            starts,
        )
    finally:
        await conn.close()
