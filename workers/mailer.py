"""Mailer: e-mails each buyer a confirmation with a PDF of their tickets (and resends).

Consumes the ``notifications`` topic (group ``mailer``): an ``OrderStatusChanged`` with
status ``confirmed`` sends the confirmation; a ``DeliveryRequested`` (``tickets.resend``,
published by the API for the buyer or support) sends the tickets again; a
``RefundChanged`` (``refund.status``, from the payments worker) that says ``refunded``
tells the buyer the money is back (request id ``refund:<refund_id>``, no attachment).
The address and language are the buyer's ``orders.contacts`` row; the PDF has one page
per ticket with its QR code (``workers/ticket_pdf.py``), in Spanish or English.

At least once, without duplicates on redelivery: a request that already has its row in
``orders.deliveries`` is skipped; the row is written after the SMTP server accepted the
message (a crash in between may send one e-mail twice, never none). Tickets not yet
signed by the issuer, or an SMTP server that does not answer, fail the batch, which is
retried after a pause (``workers.runtime.batch_consumer``).

Run: ``uv run python -m workers.mailer``.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from collections.abc import Callable, Sequence
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import asyncpg
import msgspec
from aiokafka import ConsumerRecord
from faststream import FastStream

from core.delivery import (
    CONFIRMATION,
    DEFAULT_LANG,
    RESEND,
    RESEND_TYPE,
    DeliveryRequested,
    Lang,
    MessageType,
    OrderLetter,
    TicketLine,
    letter_text,
    refund_text,
    words,
)
from core.orders import TOPIC_NOTIFICATIONS, OrderStatusChanged, topic
from core.payments import REFUND_STATUS_TYPE, RefundChanged
from core.settings import Settings, SmtpSettings, load_settings
from workers import metrics
from workers.runtime import (
    attach_probes,
    batch_consumer,
    create_broker,
    create_pg_pool,
    ensure_topics,
    pg_ready,
    run,
)
from workers.ticket_pdf import tickets_pdf

log = logging.getLogger("ticketbuster.mailer")

GROUP = "mailer"

_TYPE = msgspec.json.Decoder(MessageType)
_STATUS = msgspec.json.Decoder(OrderStatusChanged)
_RESEND = msgspec.json.Decoder(DeliveryRequested)
_REFUND = msgspec.json.Decoder(RefundChanged)
REFUND = "refund"

Sender = Callable[[EmailMessage], None]


class TicketsNotIssued(RuntimeError):
    """The order's tickets are not signed yet: the batch is retried after a pause."""


def smtp_sender(settings: SmtpSettings) -> Sender:
    """Hand a message to the configured SMTP server (blocking; run it in a thread)."""

    def send(message: EmailMessage) -> None:
        context = ssl.create_default_context()
        smtp: smtplib.SMTP
        if settings.security == "tls":
            smtp = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout_s, context=context
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s)
        with smtp:
            if settings.security == "starttls":
                smtp.starttls(context=context)
            if settings.username:
                smtp.login(settings.username, settings.password)
            smtp.send_message(message)

    return send


_ORDER_SQL = """
SELECT o.buyer, o.status, e.title, v.name AS venue, e.starts_at, c.email, c.lang,
       oc.customer_ref
FROM orders.orders o
JOIN catalog.events e ON e.id = o.event_id
JOIN catalog.venues v ON v.id = e.venue_id
LEFT JOIN orders.contacts c ON c.buyer = o.buyer
LEFT JOIN orders.order_customers oc ON oc.order_id = o.order_id
WHERE o.order_id = $1
"""

_TICKETS_SQL = """
SELECT ticket_id::text AS ticket_id, seat_id, category, price_minor, currency, holder, token
FROM orders.tickets
WHERE order_id = $1 AND revoked_at IS NULL
ORDER BY seat_id
"""

_REFUND_SQL = """
SELECT e.title, c.email, c.lang,
       (SELECT count(*) FROM orders.tickets t WHERE t.order_id = o.order_id) AS tickets
FROM orders.orders o
JOIN catalog.events e ON e.id = o.event_id
LEFT JOIN orders.contacts c ON c.buyer = $2
WHERE o.order_id = $1::uuid
"""

_RECORD_SQL = """
INSERT INTO orders.deliveries (request_id, order_id, kind, requested_by, status, recipient,
                               lang, message_id)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
ON CONFLICT (request_id) DO NOTHING
"""


class Mailer:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, send: Sender | None = None):
        self.settings = settings
        self.pool = pool
        self.send = send or smtp_sender(settings.smtp)

    async def handle(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        for record in records:
            try:
                kind = _TYPE.decode(record.value).type
                if kind == RESEND_TYPE:
                    req = _RESEND.decode(record.value)
                    await self.deliver(req.request_id, req.order_id, RESEND, req.requested_by)
                elif kind == "order.status":
                    change = _STATUS.decode(record.value)
                    if change.status == "confirmed":
                        await self.deliver(change.order_id, change.order_id, CONFIRMATION)
                elif kind == REFUND_STATUS_TYPE:
                    told = _REFUND.decode(record.value)
                    if told.refund.status == "refunded" and told.refund.order_id is not None:
                        await self.refund_mail(told)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error("skipping undecodable notification at %d: %s", record.offset, exc)

    async def deliver(
        self, request_id: str, order_id: str, kind: str, requested_by: str = "system"
    ) -> None:
        """Send one delivery request, once."""
        async with self.pool.acquire() as conn:
            done = await conn.fetchval(
                "SELECT 1 FROM orders.deliveries WHERE request_id = $1", request_id
            )
            if done:
                metrics.TICKET_EMAILS.labels(kind=kind, result="duplicate").inc()
                return
            order = await conn.fetchrow(_ORDER_SQL, order_id)
            if order is None or order["status"] != "confirmed":
                log.warning("delivery %s: order %s is not a confirmed order", request_id, order_id)
                return
            if order["email"] is None:
                await conn.execute(
                    _RECORD_SQL, request_id, order_id, kind, requested_by, "no_address",
                    None, None, None,
                )  # fmt: skip
                metrics.TICKET_EMAILS.labels(kind=kind, result="no_address").inc()
                return
            rows = await conn.fetch(_TICKETS_SQL, order_id)
        if not rows or any(r["token"] is None for r in rows):
            raise TicketsNotIssued(f"order {order_id}: tickets not issued yet")
        lang: Lang = order["lang"] if order["lang"] in ("es", "en") else DEFAULT_LANG
        letter = OrderLetter(
            order_id=order_id,
            event_title=order["title"],
            venue=order["venue"],
            starts_at=order["starts_at"],
            tickets=tuple(TicketLine(**dict(r)) for r in rows),
            customer_ref=order["customer_ref"],
        )
        message = await asyncio.to_thread(
            self._message, letter, lang, order["email"], kind == RESEND
        )
        await asyncio.to_thread(self.send, message)
        await self.pool.execute(
            _RECORD_SQL, request_id, order_id, kind, requested_by, "sent",
            order["email"], lang, message["Message-ID"],
        )  # fmt: skip
        metrics.TICKET_EMAILS.labels(kind=kind, result="sent").inc()

    async def refund_mail(self, told: RefundChanged) -> None:
        """Tell the buyer a refund of their order is paid back, once per refund."""
        refund, order_id = told.refund, told.refund.order_id
        request_id = f"refund:{refund.refund_id}"
        async with self.pool.acquire() as conn:
            if await conn.fetchval(
                "SELECT 1 FROM orders.deliveries WHERE request_id = $1", request_id
            ):
                metrics.TICKET_EMAILS.labels(kind=REFUND, result="duplicate").inc()
                return
            row = await conn.fetchrow(_REFUND_SQL, order_id, told.buyer)
        if row is None:
            log.warning("refund %s: order %s not found", refund.refund_id, order_id)
            return
        if row["email"] is None:
            await self.pool.execute(
                _RECORD_SQL, request_id, order_id, REFUND, "system", "no_address",
                None, None, None,
            )  # fmt: skip
            metrics.TICKET_EMAILS.labels(kind=REFUND, result="no_address").inc()
            return
        lang: Lang = row["lang"] if row["lang"] in ("es", "en") else DEFAULT_LANG
        tickets = len(refund.ticket_ids) or int(row["tickets"])
        subject, body = refund_text(
            str(order_id),
            row["title"],
            refund.amount,
            refund.currency,
            tickets,
            lang,
            charged=refund.payment_id is not None,
        )
        message = self._envelope(row["email"], subject, lang)
        message.set_content(body)
        await asyncio.to_thread(self.send, message)
        await self.pool.execute(
            _RECORD_SQL, request_id, order_id, REFUND, "system", "sent",
            row["email"], lang, message["Message-ID"],
        )  # fmt: skip
        metrics.TICKET_EMAILS.labels(kind=REFUND, result="sent").inc()

    def _envelope(self, to: str, subject: str, lang: Lang) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.settings.smtp.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain="ticketbuster.dev")
        message["Content-Language"] = lang
        return message

    def _message(self, letter: OrderLetter, lang: Lang, to: str, resent: bool) -> EmailMessage:
        subject, body = letter_text(letter, lang, resent=resent)
        message = self._envelope(to, subject, lang)
        message.set_content(body)
        message.add_attachment(
            tickets_pdf(letter, lang),
            maintype="application",
            subtype="pdf",
            filename=words(lang)["filename"].format(order=letter.order_id[:8]),
        )
        return message


def create_mailer(settings: Settings | None = None, send: Sender | None = None) -> FastStream:
    settings = settings or load_settings()
    prefix = settings.kafka.topic_prefix
    broker = create_broker(settings, "mailer")
    state: dict[str, Any] = {}

    async def handle(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        mailer: Mailer = state["mailer"]
        await mailer.handle(records)

    batch_consumer(
        broker,
        settings,
        [topic(prefix, TOPIC_NOTIFICATIONS)],
        f"{prefix}{GROUP}",
        handle,
        name=GROUP,
    )

    async def startup() -> None:
        await ensure_topics(settings)
        state["pool"] = await create_pg_pool(settings)
        state["mailer"] = Mailer(settings, state["pool"], send)

    async def shutdown() -> None:
        if "pool" in state:
            await state["pool"].close()

    async def ready() -> bool:
        return await pg_ready(state.get("pool")) and await broker.ping(timeout=2)

    app = FastStream(broker, logger=log)
    attach_probes(app, settings.workers.mailer_port, settings.workers.http_host, ready)
    app.on_startup(startup)
    app.after_shutdown(shutdown)
    return app


if __name__ == "__main__":
    run(create_mailer())
