"""Ticket delivery against a real SMTP server (aiosmtpd, started by this test), the real
broker and PostgreSQL: the mailer worker e-mails a confirmation with a PDF of the tickets
and their QR codes (es/en), skips a redelivered confirmation, and resends on request."""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import zxingcpp
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller
from PIL import Image
from pypdf import PdfReader

from core.delivery import refund_text
from core.inventory import partition_keys
from core.orders import TOPIC_NOTIFICATIONS, OrderStatusChanged, encode, event_key, topic
from core.payments import RefundChanged, record_refund, refund_view
from core.settings import Settings
from core.tickets import jwks, verify_ticket
from tests.integration.api_servers import api_client, with_overrides
from tests.integration.catalog_seed import cluster_client, seed_test_event
from tests.integration.sold_tickets import SoldTicket, sell, signing_pem
from workers.mailer import create_mailer
from workers.runtime import ensure_topics

pytestmark = pytest.mark.slow

RUN = uuid.uuid4().hex[:6]
# This suite's own SMTP server listens in this range (see the engineers' port plan).
SMTP_PORTS = range(2525, 2600)


@dataclass
class Inbox:
    messages: list[EmailMessage] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        self.messages.append(message)
        return "250 OK"

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["To"] == address]


def smtp_port() -> int:
    for port in SMTP_PORTS:
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return port
    raise RuntimeError("no free SMTP port in 2525-2599")


@dataclass
class Stack:
    http: Any
    inbox: Inbox
    smtp: list[Controller]
    smtp_port: int
    dsn: str
    pem: bytes
    event_id: int
    title: str
    seats: list[str]
    producer: AIOKafkaProducer
    notifications: str

    async def sell(self, buyer: str, n: int, *, issued: bool = True) -> list[SoldTicket]:
        seats, self.seats = self.seats[:n], self.seats[n:]
        return await sell(self.dsn, self.event_id, seats, buyer, self.pem, issued=issued)

    async def confirmed(self, ticket: SoldTicket) -> None:
        """What the notifier publishes when the persister confirms the order."""
        change = OrderStatusChanged(
            order_id=ticket.order_id,
            event_id=self.event_id,
            status="confirmed",
            at=int(time.time() * 1000),
        )
        await self.producer.send_and_wait(
            self.notifications, encode(change), key=event_key(self.event_id)
        )


@pytest.fixture(scope="module")
async def stack(
    settings: Settings, pg_dsn: str, services: dict[str, str], tmp_path_factory: Any
) -> AsyncIterator[Stack]:
    inbox = Inbox()
    port = smtp_port()
    smtp = Controller(inbox, hostname="127.0.0.1", port=port)
    smtp.start()
    servers = [smtp]
    key_path = Path(tmp_path_factory.mktemp("mail-keys")) / "signing.pem"
    config = with_overrides(
        settings,
        database={"url": pg_dsn},
        kafka={"topic_prefix": f"{settings.kafka.topic_prefix}mail."},
        api={"rate_limit_enabled": False},
        smtp={"host": "127.0.0.1", "port": port, "sender": "TicketBuster <t@example.test>"},
        tickets={"signing_key_path": str(key_path)},
        workers={"mailer_port": 0},
    )
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    title = f"Noche de Ópera {RUN}"
    event_id, seats = await seed_test_event(
        pg_dsn,
        redis,
        name=f"Mail test {RUN}",
        address="Loopback 4",
        days_ahead=10,
        base_price_minor=12_000,
        capacity=40,
    )
    # The title as buyers see it, accents included (the slug is made from the seed name).
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute("UPDATE catalog.events SET title = $2 WHERE id = $1", event_id, title)
    finally:
        await conn.close()
    await ensure_topics(config)
    producer = AIOKafkaProducer(bootstrap_servers=config.kafka.bootstrap, acks="all")
    await producer.start()
    mailer = create_mailer(config)
    await mailer.start()
    try:
        async with api_client(config) as http:
            yield Stack(
                http,
                inbox,
                servers,
                port,
                pg_dsn,
                signing_pem(key_path),
                event_id,
                title,
                sorted(seats),
                producer,
                topic(config.kafka.topic_prefix, TOPIC_NOTIFICATIONS),
            )
    finally:
        await mailer.stop()
        await producer.stop()
        servers[-1].stop()
        for key in partition_keys(event_id, 0):
            await redis.delete(key)
        await redis.aclose()


async def bearer(http: Any, sub: str, roles: list[str] | None = None) -> dict[str, str]:
    r = await http.post("/api/v1/auth/dev-token", json={"sub": sub, "roles": roles or ["buyer"]})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def until(probe: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def pdf_of(message: EmailMessage) -> tuple[str, PdfReader]:
    parts = [p for p in message.iter_attachments() if p.get_content_type() == "application/pdf"]
    assert len(parts) == 1
    data = parts[0].get_content()
    assert isinstance(data, bytes) and data.startswith(b"%PDF")
    return str(parts[0].get_filename()), PdfReader(io.BytesIO(data))


def qr_codes(reader: PdfReader) -> list[str]:
    found = []
    for page in reader.pages:
        for image in page.images:
            picture = Image.open(io.BytesIO(image.data))
            found += [r.text for r in zxingcpp.read_barcodes(picture)]
    return found


async def test_confirmation_in_spanish_with_a_pdf_of_the_tickets(stack: Stack) -> None:
    buyer = f"ana-{RUN}"
    address = f"ana-{RUN}@example.test"
    auth = await bearer(stack.http, buyer)
    none = await stack.http.get("/api/v1/me/contact", headers=auth)
    assert none.status_code == 200 and none.json() == {"email": None, "lang": None}
    put = await stack.http.put(
        "/api/v1/me/contact", json={"email": address, "lang": "es"}, headers=auth
    )
    assert put.status_code == 200, put.text
    assert (await stack.http.get("/api/v1/me/contact", headers=auth)).json() == {
        "email": address,
        "lang": "es",
    }
    tickets = await stack.sell(buyer, 2)
    await stack.confirmed(tickets[0])

    [mail] = await until(lambda: stack.inbox.to(address))
    assert mail["Subject"] == f"Tus entradas para {stack.title}"
    assert mail["From"] == "TicketBuster <t@example.test>"
    body = mail.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "¡Gracias por tu compra!" in text
    assert all(t.seat_id in text for t in tickets)

    filename, reader = pdf_of(mail)
    assert filename == f"entradas-{tickets[0].order_id[:8]}.pdf"
    assert len(reader.pages) == 2
    pages = [page.extract_text() for page in reader.pages]
    for ticket, page in zip(tickets, pages, strict=True):
        assert ticket.seat_id in page and "Asiento" in page and "Titular" in page
        assert "Noche de" in page  # the title, in the PDF's Latin-1 font
    # Each page's QR code is its ticket's signed token, valid for a gate scanner.
    codes = qr_codes(reader)
    assert sorted(codes) == sorted(t.token for t in tickets)
    key_set = jwks([stack.pem])
    assert {verify_ticket(c, key_set).ticket for c in codes} == {t.ticket_id for t in tickets}


async def test_english_once_per_confirmation_and_resent_on_request(stack: Stack) -> None:
    buyer = f"ben-{RUN}"
    address = f"ben-{RUN}@example.test"
    auth = await bearer(stack.http, buyer)
    await stack.http.put("/api/v1/me/contact", json={"email": address, "lang": "en"}, headers=auth)
    [ticket] = await stack.sell(buyer, 1)
    await stack.confirmed(ticket)
    [first] = await until(lambda: stack.inbox.to(address))
    assert first["Subject"] == f"Your tickets for {stack.title}"
    assert pdf_of(first)[0] == f"tickets-{ticket.order_id[:8]}.pdf"

    # The same confirmation delivered again (at least once) sends nothing more; the resend
    # after it, on the same partition, is handled after it.
    await stack.confirmed(ticket)
    resend = await stack.http.post(f"/api/v1/orders/{ticket.order_id}/resend", headers=auth)
    assert resend.status_code == 202, resend.text
    assert resend.json()["status"] == "queued"
    mails = await until(lambda: len(stack.inbox.to(address)) >= 2 and stack.inbox.to(address))
    assert len(mails) == 2
    body = mails[1].get_body(("plain",))
    assert body is not None and "Here are your tickets again" in body.get_content()
    assert qr_codes(pdf_of(mails[1])[1]) == [ticket.token]

    conn = await asyncpg.connect(stack.dsn)
    try:
        rows = await conn.fetch(
            "SELECT kind, status, recipient, requested_by FROM orders.deliveries"
            " WHERE order_id = $1 ORDER BY sent_at",
            ticket.order_id,
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in rows] == [
        ("confirmation", "sent", address, "system"),
        ("resend", "sent", address, buyer),
    ]


async def test_a_refund_is_mailed_once_when_it_is_paid_back(stack: Stack) -> None:
    """The payments worker tells each refund state (test_payments checks that); the mailer
    writes to the buyer once the refund is ``refunded``, once however often it is told."""
    buyer = f"dora-{RUN}"
    address = f"dora-{RUN}@example.test"
    auth = await bearer(stack.http, buyer)
    await stack.http.put("/api/v1/me/contact", json={"email": address, "lang": "en"}, headers=auth)
    tickets = await stack.sell(buyer, 2)
    conn = await asyncpg.connect(stack.dsn)
    try:
        async with conn.transaction():
            record = await record_refund(
                conn,
                order_id=tickets[0].order_id,
                kind="organizer",
                actor="test",
                ticket_ids=[tickets[0].ticket_id],
            )
        requested = refund_view(
            await conn.fetchrow(
                "SELECT * FROM payments.refunds WHERE refund_id = $1",
                uuid.UUID(record.view.refund_id),
            )
        )
        paid = refund_view(
            await conn.fetchrow(
                "UPDATE payments.refunds SET status = 'refunded', refunded_at = now()"
                " WHERE refund_id = $1 RETURNING *",
                uuid.UUID(record.view.refund_id),
            )
        )
    finally:
        await conn.close()
    for view in (requested, paid, paid):  # told at least once: the last one is a repeat
        told = RefundChanged(refund=view, buyer=buyer, event_id=stack.event_id, at=1)
        await stack.producer.send_and_wait(
            stack.notifications, encode(told), key=event_key(stack.event_id)
        )
    [mail] = await until(lambda: stack.inbox.to(address))
    short = tickets[0].order_id[:8]
    # Bought without the payment step: nothing was charged, so nothing is paid back.
    assert mail["Subject"] == f"Order {short} cancelled: {stack.title}"
    body = mail.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert f"We cancelled tickets of order {short} (1)" in text and "not charged" in text
    assert list(mail.iter_attachments()) == []
    # The repeat and anything after it on the partition: still one e-mail.
    await stack.confirmed(tickets[1])
    await until(lambda: len(stack.inbox.to(address)) >= 2)
    assert [m["Subject"] for m in stack.inbox.to(address)] == [
        mail["Subject"],
        f"Your tickets for {stack.title}",
    ]
    conn = await asyncpg.connect(stack.dsn)
    try:
        kinds = await conn.fetch(
            "SELECT request_id, kind, status FROM orders.deliveries WHERE order_id = $1"
            " ORDER BY sent_at",
            uuid.UUID(tickets[0].order_id),
        )
    finally:
        await conn.close()
    assert [tuple(r) for r in kinds] == [
        (f"refund:{record.view.refund_id}", "refund", "sent"),
        (tickets[0].order_id, "confirmation", "sent"),
    ]


def test_refund_letters_in_both_languages() -> None:
    subject, body = refund_text("0123456789ab", "Ópera", 12_345, "PEN", 2, "es")
    assert subject == "Reembolso de tu pedido 01234567: Ópera"
    assert "Te devolvimos PEN 123.45 del pedido 01234567 (entradas: 2)." in body
    assert "unos días" in body
    subject, body = refund_text("0123456789ab", "Opera", 500, "PEN", 1, "en", charged=False)
    assert subject == "Order 01234567 cancelled: Opera"
    assert "You were not charged." in body and "few days" not in body


async def test_resend_refusals(stack: Stack) -> None:
    owner = f"cris-{RUN}"
    [ticket] = await stack.sell(owner, 1)
    mine = await bearer(stack.http, owner)
    other = await bearer(stack.http, f"dani-{RUN}")
    admin = await bearer(stack.http, f"sup-{RUN}", ["admin"])
    path = f"/api/v1/orders/{ticket.order_id}/resend"

    nobody = await stack.http.post(path, headers=other)
    assert nobody.status_code == 404
    no_address = await stack.http.post(path, headers=mine)
    assert no_address.status_code == 409
    assert no_address.json()["type"].endswith("/no_delivery_address")
    assert (await stack.http.post("/api/v1/orders/not-an-id/resend", headers=mine)).status_code == (
        404
    )
    bad = await stack.http.put(
        "/api/v1/me/contact", json={"email": "no-at-sign", "lang": "es"}, headers=mine
    )
    assert bad.status_code == 422 and bad.json()["field"] == "email"
    nul = await stack.http.put(
        "/api/v1/me/contact", json={"email": "c\u0000@example.test"}, headers=mine
    )
    assert nul.status_code == 422 and nul.json()["field"] == "email"
    lang = await stack.http.put(
        "/api/v1/me/contact", json={"email": "c@example.test", "lang": "fr"}, headers=mine
    )
    assert lang.status_code == 422 and lang.json()["field"] == "lang"
    await stack.http.put(
        "/api/v1/me/contact", json={"email": f"cris-{RUN}@example.test"}, headers=mine
    )
    # Support may resend any order.
    assert (await stack.http.post(path, headers=admin)).status_code == 202
    [mail] = await until(lambda: stack.inbox.to(f"cris-{RUN}@example.test"))
    assert mail["Subject"].startswith("Tus entradas")  # the default language


async def test_a_buyer_without_an_address_gets_no_mail_and_it_is_recorded(stack: Stack) -> None:
    [ticket] = await stack.sell(f"eli-{RUN}", 1)
    await stack.confirmed(ticket)

    async def recorded() -> Any:
        conn = await asyncpg.connect(stack.dsn)
        try:
            return await conn.fetchval(
                "SELECT status FROM orders.deliveries WHERE request_id = $1", ticket.order_id
            )
        finally:
            await conn.close()

    assert await until(recorded) == "no_address"
    assert stack.inbox.to(f"eli-{RUN}@example.test") == []


async def test_waits_for_the_issuer_and_for_the_smtp_server(stack: Stack) -> None:
    """Confirmed before its tickets are signed, while the SMTP server is down: the e-mail
    goes once both are there, with the tickets' QR codes; nothing is lost."""
    buyer = f"fede-{RUN}"
    address = f"fede-{RUN}@example.test"
    auth = await bearer(stack.http, buyer)
    await stack.http.put("/api/v1/me/contact", json={"email": address, "lang": "en"}, headers=auth)
    [ticket] = await stack.sell(buyer, 1, issued=False)
    stack.smtp[-1].stop()
    await stack.confirmed(ticket)

    # The issuer signs the ticket; then the SMTP server comes back.
    conn = await asyncpg.connect(stack.dsn)
    try:
        await conn.execute(
            "UPDATE orders.tickets SET token = $2, kid = 'k', issued_at = now()"
            " WHERE ticket_id = $1",
            ticket.ticket_id,
            ticket.token,
        )
    finally:
        await conn.close()
    server = Controller(stack.inbox, hostname="127.0.0.1", port=stack.smtp_port)
    server.start()
    stack.smtp.append(server)

    [mail] = await until(lambda: stack.inbox.to(address), timeout_s=60)
    assert qr_codes(pdf_of(mail)[1]) == [ticket.token]
