"""Ticket issuer: ``orders.confirmed`` -> a signed token per ticket -> ``tickets.issued``.

Each ticket of a confirmed order gets a compact JWS (EdDSA, ``kid`` in its header; claims
ticket, event, seat, holder, order) stored on its row. Idempotent: a ticket that already
has a token keeps it (``UPDATE ... WHERE token IS NULL``), so a redelivered batch signs
nothing twice. Offsets are committed after the tokens are stored and announced.

Also consumes ``tickets.reissue`` (support's reissue, ``core/support.py``): a new token of
the requested generation, stored only while the row still waits for exactly that
generation (``WHERE token IS NULL AND generation = ...``), so a redelivered or outdated
request signs nothing.

Run: ``uv run python -m workers.issuer``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import asyncpg
import msgspec
from aiokafka import ConsumerRecord
from faststream import FastStream
from faststream.kafka import KafkaBroker

from core.clock import now_ms
from core.orders import (
    TOPIC_CONFIRMED,
    TOPIC_TICKETS_ISSUED,
    OrderConfirmed,
    TicketIssued,
    encode,
    event_key,
    topic,
)
from core.settings import Settings, load_settings
from core.support import TOPIC_REISSUE, ReissueRequested
from core.tickets import SigningKey, TicketClaims, sign_ticket
from workers import metrics
from workers.runtime import (
    attach_probes,
    batch_consumer,
    create_broker,
    create_pg_pool,
    ensure_topics,
    load_signing_key,
    pg_ready,
    run,
)

log = logging.getLogger("ticketbuster.issuer")

GROUP = "issuer"

_CONFIRMED = msgspec.json.Decoder(OrderConfirmed)
_REISSUE = msgspec.json.Decoder(ReissueRequested)


class Issuer:
    def __init__(
        self, settings: Settings, broker: KafkaBroker, pool: asyncpg.Pool, key: SigningKey
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.pool = pool
        self.key = key

    async def handle(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        orders: list[OrderConfirmed] = []
        for record in records:
            try:
                orders.append(_CONFIRMED.decode(record.value))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("skipping undecodable OrderConfirmed at %d: %s", record.offset, exc)
        if not orders:
            return
        iat = now_ms() // 1000
        ids: list[str] = []
        tokens: list[str] = []
        meta: dict[str, tuple[OrderConfirmed, str]] = {}
        for order in orders:
            for ticket in order.tickets:
                if ticket.ticket_id in meta:
                    continue
                claims = TicketClaims(
                    ticket=ticket.ticket_id,
                    event=order.event_id,
                    seat=ticket.seat_id,
                    holder=order.buyer,
                    order=order.order_id,
                    iat=iat,
                )
                ids.append(ticket.ticket_id)
                tokens.append(sign_ticket(claims, self.key))
                meta[ticket.ticket_id] = (order, ticket.seat_id)
        rows = await self.pool.fetch(
            """
            UPDATE orders.tickets t SET token = u.token, kid = $3, issued_at = now()
            FROM unnest($1::uuid[], $2::text[]) AS u(ticket_id, token)
            WHERE t.ticket_id = u.ticket_id AND t.token IS NULL
            RETURNING t.ticket_id
            """,
            ids,
            tokens,
            self.key.kid,
        )
        issued_at = now_ms()
        issued = []
        for row in rows:
            order, seat = meta[str(row["ticket_id"])]
            issued.append(
                TicketIssued(
                    ticket_id=str(row["ticket_id"]),
                    order_id=order.order_id,
                    event_id=order.event_id,
                    seat_id=seat,
                    holder=order.buyer,
                    kid=self.key.kid,
                    issued_at=issued_at,
                )
            )
        await self._announce(issued)

    async def reissue(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Sign the reissued tickets' new tokens (one generation each)."""
        requests: dict[str, ReissueRequested] = {}
        for record in records:
            try:
                request = _REISSUE.decode(record.value)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("skipping undecodable reissue at %d: %s", record.offset, exc)
                continue
            known = requests.get(request.ticket_id)
            if known is None or known.generation < request.generation:
                requests[request.ticket_id] = request
        if not requests:
            return
        iat = now_ms() // 1000
        tokens = [
            sign_ticket(
                TicketClaims(
                    ticket=r.ticket_id,
                    event=r.event_id,
                    seat=r.seat_id,
                    holder=r.holder,
                    order=r.order_id,
                    iat=iat,
                    gen=r.generation,
                ),
                self.key,
            )
            for r in requests.values()
        ]
        rows = await self.pool.fetch(
            """
            UPDATE orders.tickets t SET token = u.token, kid = $4, issued_at = now()
            FROM unnest($1::uuid[], $2::text[], $3::int[]) AS u(ticket_id, token, generation)
            WHERE t.ticket_id = u.ticket_id AND t.token IS NULL AND t.generation = u.generation
            RETURNING t.ticket_id
            """,
            list(requests),
            tokens,
            [r.generation for r in requests.values()],
            self.key.kid,
        )
        issued_at = now_ms()
        issued = []
        for row in rows:
            r = requests[str(row["ticket_id"])]
            issued.append(
                TicketIssued(
                    ticket_id=r.ticket_id,
                    order_id=r.order_id,
                    event_id=r.event_id,
                    seat_id=r.seat_id,
                    holder=r.holder,
                    kid=self.key.kid,
                    issued_at=issued_at,
                )
            )
        await self._announce(issued)

    async def _announce(self, issued: Sequence[TicketIssued]) -> None:
        """Publish TicketIssued for the tickets just signed (all awaited together)."""
        name = topic(self.settings.kafka.topic_prefix, TOPIC_TICKETS_ISSUED)
        futures = [
            await self.broker.publish(
                encode(event), name, key=event_key(event.event_id), no_confirm=True
            )
            for event in issued
        ]
        await asyncio.gather(*futures)
        metrics.TICKETS_ISSUED.inc(len(issued))


def create_issuer(settings: Settings | None = None) -> FastStream:
    settings = settings or load_settings()
    prefix = settings.kafka.topic_prefix
    broker = create_broker(settings, "issuer")
    state: dict[str, Any] = {}

    async def handle(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        issuer: Issuer = state["issuer"]
        await issuer.handle(records)

    async def reissue(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        issuer: Issuer = state["issuer"]
        await issuer.reissue(records)

    batch_consumer(
        broker, settings, [topic(prefix, TOPIC_CONFIRMED)], f"{prefix}{GROUP}", handle, name=GROUP
    )
    batch_consumer(
        broker,
        settings,
        [topic(prefix, TOPIC_REISSUE)],
        f"{prefix}{GROUP}-reissue",
        reissue,
        name=f"{GROUP}-reissue",
    )

    async def startup() -> None:
        key, _ = load_signing_key(settings)
        await ensure_topics(settings)
        state["pool"] = await create_pg_pool(settings)
        state["issuer"] = Issuer(settings, broker, state["pool"], key)

    async def shutdown() -> None:
        if "pool" in state:
            await state["pool"].close()

    async def ready() -> bool:
        return await pg_ready(state.get("pool")) and await broker.ping(timeout=2)

    app = FastStream(broker, logger=log)
    attach_probes(app, settings.workers.issuer_port, settings.workers.http_host, ready)
    app.on_startup(startup)
    app.after_shutdown(shutdown)
    return app


if __name__ == "__main__":
    run(create_issuer())
