"""Ticket delivery: where a buyer's tickets go, the resend request, and the e-mail's words.

The buyer says where to send tickets (``PUT /api/v1/me/contact``: an address and a
language, es or en). When an order is confirmed the notifier publishes its
``OrderStatusChanged`` to the ``notifications`` topic; the mailer worker
(``workers/mailer.py``) consumes it and e-mails the buyer a confirmation with a PDF of the
tickets and their QR codes. A resend (the buyer, or support) is a ``DeliveryRequested`` on
the same topic: e-mail leaves only from the worker, never from a request handler.

Each delivery is one row of ``orders.deliveries`` keyed by its request (the order id for
the confirmation, a fresh id for each resend), so a redelivered message does not send
twice once its row is written.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Final, Literal

import msgspec

from core.errors import Conflict

Lang = Literal["es", "en"]
DEFAULT_LANG: Final[Lang] = "es"
# An address as RFC 5321 bounds it, with one @ and a dot in the domain; the SMTP server
# is the final judge.
EMAIL_PATTERN: Final = r"^[^@\s<>\"',;\x00]{1,64}@[^@\s<>\"',;\x00]+\.[^@\s<>\"',;\x00]+$"
Email = Annotated[
    str, msgspec.Meta(min_length=3, max_length=254, pattern=EMAIL_PATTERN, examples=["ana@x.pe"])
]
RESEND_TYPE: Final = "tickets.resend"
CONFIRMATION: Final = "confirmation"
RESEND: Final = "resend"


class Contact(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Where the caller's tickets are e-mailed, and in which language."""

    email: Email
    lang: Lang = DEFAULT_LANG


class ContactView(msgspec.Struct, frozen=True):
    """The caller's delivery address and language; both null until one is set."""

    email: str | None
    lang: Lang | None


class NoDeliveryAddress(Conflict):
    """The order's buyer has not said where to send tickets (``PUT /me/contact``)."""

    code = "no_delivery_address"
    title = "No delivery address"


class DeliveryRequested(msgspec.Struct, frozen=True):
    """Send an order's tickets again (to the buyer's current address)."""

    request_id: str
    order_id: str
    event_id: int
    requested_by: str
    requested_at: int  # ms since epoch
    type: Literal["tickets.resend"] = "tickets.resend"
    v: int = 1


class ResendAccepted(msgspec.Struct, frozen=True):
    request_id: str
    order_id: str
    status: str = "queued"


class MessageType(msgspec.Struct):
    """The ``type`` of a notifications-topic message (``order.status``, ``tickets.resend``)."""

    type: str = ""


class TicketLine(msgspec.Struct, frozen=True):
    """One ticket as the e-mail and its PDF show it."""

    ticket_id: str
    seat_id: str
    category: str
    price_minor: int
    currency: str
    holder: str
    token: str


class OrderLetter(msgspec.Struct, frozen=True):
    """Everything the confirmation e-mail says about one order."""

    order_id: str
    event_title: str
    venue: str
    starts_at: datetime
    tickets: tuple[TicketLine, ...]
    # A partner's reference for its end customer (PUT /orders/{id}/customer), if any.
    customer_ref: str | None = None


_WORDS: dict[Lang, dict[str, str]] = {
    "es": {
        "subject": "Tus entradas para {title}",
        "greeting": "¡Gracias por tu compra!",
        "intro": "Tu pedido {order} está confirmado. Adjuntamos tus entradas en PDF ({n}).",
        "when": "Cuándo",
        "where": "Dónde",
        "seat": "Asiento",
        "category": "Categoría",
        "price": "Precio",
        "ticket": "Entrada",
        "holder": "Titular",
        "customer": "Cliente",
        "order": "Pedido",
        "gate": "Muestra el código QR en la puerta. Cada entrada admite un solo ingreso.",
        "resent": "Te reenviamos tus entradas, como pediste.",
        "filename": "entradas-{order}.pdf",
        "refund_subject": "Reembolso de tu pedido {order}: {title}",
        "refund_body": "Te devolvimos {amount} del pedido {order} (entradas: {n}).",
        "refund_void": "Esas entradas ya no son válidas y sus asientos volvieron a la venta.",
        "refund_bank": "El dinero puede tardar unos días en verse en tu cuenta.",
        "refund_free_subject": "Pedido {order} anulado: {title}",
        "refund_free": "Anulamos entradas del pedido {order} ({n}). No se te cobró nada por ellas.",
    },
    "en": {
        "subject": "Your tickets for {title}",
        "greeting": "Thank you for your purchase!",
        "intro": "Your order {order} is confirmed. Your tickets are attached as a PDF ({n}).",
        "when": "When",
        "where": "Where",
        "seat": "Seat",
        "category": "Category",
        "price": "Price",
        "ticket": "Ticket",
        "holder": "Holder",
        "customer": "Customer",
        "order": "Order",
        "gate": "Show the QR code at the gate. Each ticket admits one entry.",
        "resent": "Here are your tickets again, as you asked.",
        "filename": "tickets-{order}.pdf",
        "refund_subject": "Refund of your order {order}: {title}",
        "refund_body": "We refunded {amount} of order {order} (tickets: {n}).",
        "refund_void": "Those tickets are no longer valid and their seats are back on sale.",
        "refund_bank": "The money may take a few days to show in your account.",
        "refund_free_subject": "Order {order} cancelled: {title}",
        "refund_free": "We cancelled tickets of order {order} ({n}). You were not charged.",
    },
}


def words(lang: Lang) -> dict[str, str]:
    """The e-mail's and the PDF's phrases in ``lang``."""
    return _WORDS[lang]


def money(minor: int, currency: str) -> str:
    """``12345, "PEN"`` -> ``"PEN 123.45"`` (minor units are cents for every currency we sell)."""
    return f"{currency} {minor // 100}.{minor % 100:02d}"


def when(starts_at: datetime) -> str:
    """The event's start, in UTC (the catalog keeps no venue time zone)."""
    return starts_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def letter_text(letter: OrderLetter, lang: Lang, *, resent: bool = False) -> tuple[str, str]:
    """The subject and plain-text body of the confirmation (or resend) e-mail."""
    w = words(lang)
    short = letter.order_id[:8]
    lines = [w["resent"] if resent else w["greeting"], ""]
    lines.append(w["intro"].format(order=short, n=len(letter.tickets)))
    lines += [
        "",
        letter.event_title,
        f"{w['when']}: {when(letter.starts_at)}",
        f"{w['where']}: {letter.venue}",
    ]
    if letter.customer_ref:
        lines.append(f"{w['customer']}: {letter.customer_ref}")
    lines += [
        "",
    ]
    for t in letter.tickets:
        lines.append(
            f"- {w['seat']} {t.seat_id} · {t.category} · {money(t.price_minor, t.currency)}"
        )
    lines += ["", w["gate"], "", "TicketBuster"]
    return w["subject"].format(title=letter.event_title), "\n".join(lines) + "\n"


def refund_text(
    order_id: str,
    event_title: str,
    amount_minor: int,
    currency: str,
    tickets: int,
    lang: Lang,
    *,
    charged: bool = True,
) -> tuple[str, str]:
    """The subject and plain-text body of the e-mail that tells a buyer a refund is paid;
    ``charged=False`` for tickets bought without the payment step (nothing to give back)."""
    w = words(lang)
    short = order_id[:8]
    if charged:
        first = w["refund_body"].format(
            amount=money(amount_minor, currency), order=short, n=tickets
        )
        subject, bank = w["refund_subject"], [w["refund_bank"]]
    else:
        first, subject, bank = (
            w["refund_free"].format(n=tickets, order=short),
            w["refund_free_subject"],
            [],
        )
    body = [first, "", event_title, "", w["refund_void"], *bank, "", "TicketBuster"]
    return subject.format(order=short, title=event_title), "\n".join(body) + "\n"
