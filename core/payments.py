"""Money in the purchase saga: the payment-provider interface, the saga's states and rules,
and the simulated provider's wire format. See docs/decisions/1101-payments-saga.md.

A payment pays for one hold. The buyer starts it (``POST /api/v1/payments``), the provider
confirms it asynchronously with a signed webhook, and only then is the order placed, by
the same code as ``POST /api/v1/orders`` (``api/orders/service.py``), with the payment as
its idempotency key. Every step is idempotent and has a compensation:

- no ticket without a captured payment: with ``TB_PAYMENTS_REQUIRED`` the order endpoint
  refuses a hold that costs money (402 ``payment_required``);
- no captured payment without a ticket: a capture whose hold is gone, whose amount does
  not match, or whose order the persister rejected becomes an automatic refund.

Refunds (buyer cancel, organizer refund of an order or single tickets, event
cancellation) revoke the tickets in PostgreSQL first, then return the seats to sale in
Redis (``lua/refund.lua``), then pay the money back through the provider; the payments
worker retries each step until it is done.

This module is the domain: Structs, rules, signatures. The providers' HTTP clients
(``SimulatedProvider`` here, ``core/payments_stripe.py``) use httpx and the official
``stripe`` package (docs/decisions/1101).
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Final, Literal, Protocol

import httpx
import msgspec

from core.clock import epoch_ms, epoch_ms_or_none
from core.errors import DomainError, InvalidInput, Unavailable
from core.settings import PaymentSettings

PaymentStatus = Literal["pending", "declined", "expired", "captured", "refunding", "refunded"]
RefundStatus = Literal["requested", "refunded", "failed"]
RefundKind = Literal["buyer_cancel", "organizer", "event_cancelled", "unplaced", "rejected"]
ProviderName = Literal["simulated", "stripe"]

PAYMENT_STATUSES: Final = ("pending", "declined", "expired", "captured", "refunding", "refunded")
# Namespace of payment ids (uuid5 of buyer, idempotency key and hold).
_PAYMENT_NS: Final = uuid.UUID("6f1f2f0e-7c1b-4d7e-9a53-2f0c8f1d1101")
_REFUND_NS: Final = uuid.UUID("6f1f2f0e-7c1b-4d7e-9a53-2f0c8f1d1102")
# The simulated provider's signature header and how old a signed callback may be.
SIM_SIGNATURE_HEADER: Final = "tb-sim-signature"
SIGNATURE_TOLERANCE_S: Final = 300
# Refund retries: exponential from 2 s, at most an hour apart.
REFUND_RETRY_BASE_S: Final = 2.0
REFUND_RETRY_MAX_S: Final = 3600.0


class PaymentRequired(DomainError):
    """The hold costs money: pay for it through the payments endpoint first."""

    status = 402
    code = "payment_required"


class InvalidSignature(DomainError):
    """A provider webhook whose signature does not verify (or is too old)."""

    status = 400
    code = "invalid_signature"


class RefundRefused(DomainError):
    """The refund cannot be made (outside the policy window, already refunded, admitted)."""

    status = 409
    code = "refund_refused"


# -- wire types ------------------------------------------------------------------------------


class PaymentCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``POST /api/v1/payments``: pay for one of the caller's holds."""

    hold_id: str


class PaymentView(msgspec.Struct, frozen=True, kw_only=True):
    payment_id: str
    status: PaymentStatus
    hold_id: str
    event_id: int
    amount: int
    currency: str
    provider: str
    # Where the buyer approves the payment (the provider's hosted checkout).
    checkout_url: str | None = None
    # Stripe: the PaymentIntent's client secret, for Stripe.js on the page.
    client_secret: str | None = None
    order_id: str | None = None
    reason: str | None = None
    created_at: int = 0


# Free text stored as it is: printable, no control characters (PostgreSQL refuses NUL).
_Text = Annotated[
    str, msgspec.Meta(max_length=500, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$")
]
_Uuid = Annotated[str, msgspec.Meta(pattern=r"^[0-9a-fA-F-]{32,36}$")]


class RefundCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An organizer's refund: the whole order, or only ``ticket_ids`` (a partial refund)."""

    ticket_ids: Annotated[tuple[_Uuid, ...], msgspec.Meta(max_length=500)] | None = None
    reason: _Text | None = None


class RefundView(msgspec.Struct, frozen=True, kw_only=True):
    refund_id: str
    order_id: str | None
    payment_id: str | None
    kind: RefundKind
    status: RefundStatus
    amount: int
    currency: str
    ticket_ids: tuple[str, ...] = ()
    reason: str | None = None
    created_at: int = 0
    refunded_at: int | None = None


class RefundList(msgspec.Struct, frozen=True):
    items: tuple[RefundView, ...]


REFUND_STATUS_TYPE: Final = "refund.status"


class RefundChanged(msgspec.Struct, frozen=True, kw_only=True):
    """A refund's new state on the ``notifications`` topic, keyed by its event: published
    by the payments worker once per state it reaches (requested, refunded, failed; at
    least once), for the mailer's refund e-mail and partner webhooks."""

    type: Literal["refund.status"] = "refund.status"
    refund: RefundView
    buyer: str
    event_id: int
    at: int


class Checkout(msgspec.Struct, frozen=True):
    """What a provider answers to a new payment."""

    provider_ref: str
    checkout_url: str | None = None
    client_secret: str | None = None


class PaymentEvent(msgspec.Struct, frozen=True):
    """A verified provider webhook, in our terms."""

    # The provider's own id of this notification (a duplicate has the same one).
    event_ref: str
    provider_ref: str
    kind: Literal["succeeded", "failed"]
    amount: int
    currency: str


class RefundOutcome(msgspec.Struct, frozen=True):
    ok: bool
    provider_ref: str | None = None
    error: str | None = None


class PaymentProvider(Protocol):
    """A payment provider. Every call is idempotent by the key given."""

    name: str

    async def create(
        self, *, payment_id: str, amount: int, currency: str, description: str
    ) -> Checkout: ...

    async def refund(
        self, *, provider_ref: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundOutcome: ...

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> PaymentEvent | None:
        """The verified event (raise InvalidSignature), or None for a kind we ignore."""
        ...

    async def aclose(self) -> None:
        """Release the provider's connections at shutdown."""
        ...


# -- rules -----------------------------------------------------------------------------------


def payment_id_for(buyer: str, key: str, hold_id: str) -> str:
    """The same buyer, key and hold always name the same payment (a retry finds it)."""
    return str(uuid.uuid5(_PAYMENT_NS, f"{buyer}\x00{key}\x00{hold_id}"))


def order_key_for(payment_id: str) -> str:
    """The Idempotency-Key of the order a payment places (one order per payment)."""
    return f"pay-{payment_id}"


def refund_id_for(kind: str, ref: str, ticket_ids: Sequence[str] = ()) -> str:
    """A refund's id from what it refunds, so the same request never refunds twice."""
    return str(uuid.uuid5(_REFUND_NS, f"{kind}\x00{ref}\x00{','.join(sorted(ticket_ids))}"))


def amount_of(categories: Sequence[str], prices: Mapping[str, int]) -> int:
    """A hold's price from the catalog (never from the client)."""
    try:
        return sum(prices[c] for c in categories)
    except KeyError as exc:
        raise Unavailable(f"no price for category {exc.args[0]!r}; retry shortly") from None


def may_self_cancel(now_ms: int, starts_at_ms: int, window_hours: int | None) -> bool:
    """A buyer may cancel until ``window_hours`` before the event; None: never."""
    if window_hours is None:
        return False
    return now_ms <= starts_at_ms - window_hours * 3_600_000


def refund_retry_delay_s(attempts: int) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones."""
    return float(min(REFUND_RETRY_MAX_S, REFUND_RETRY_BASE_S * 2.0 ** max(0, attempts - 1)))


# -- the simulated provider's signatures -----------------------------------------------------


def sign(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """``t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`` (Stripe's scheme)."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def verify(
    secrets: Sequence[str], header: str | None, body: bytes, now_s: int | None = None
) -> None:
    """Raise InvalidSignature unless one of ``secrets`` signed ``body`` recently."""
    if not header:
        raise InvalidSignature("the webhook carries no signature header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        k, _, v = item.strip().partition("=")
        parts.setdefault(k, []).append(v)
    try:
        ts = int(parts["t"][0])
    except (KeyError, ValueError):
        raise InvalidSignature("the signature header has no timestamp") from None
    now = int(time.time()) if now_s is None else now_s
    if abs(now - ts) > SIGNATURE_TOLERANCE_S:
        raise InvalidSignature("the webhook's signature is too old (or from the future)")
    given = parts.get("v1", [])
    for secret in secrets:
        want = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(want, g) for g in given):
            return
    raise InvalidSignature("the webhook's signature does not verify")


class SimCallback(msgspec.Struct, frozen=True):
    """The simulated provider's webhook body."""

    id: str
    type: Literal["payment.succeeded", "payment.failed"]
    intent: str
    amount: int
    currency: str


class SimIntentCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    payment_id: _Uuid
    amount: Annotated[int, msgspec.Meta(gt=0)]
    currency: Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{3}$")]
    description: _Text = ""


class SimIntent(msgspec.Struct, frozen=True):
    intent: str
    checkout_url: str


class SimRefundCreate(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    amount: int
    idempotency_key: Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,100}$")]


class SimRefund(msgspec.Struct, frozen=True):
    refund: str
    status: Literal["succeeded", "failed"]
    error: str | None = None


_SIM_CALLBACK: Final = msgspec.json.Decoder(SimCallback)


def provider_for(settings: PaymentSettings) -> PaymentProvider:
    """The configured provider (TB_PAYMENTS_PROVIDER)."""
    if settings.provider == "stripe":
        from core.payments_stripe import StripeProvider

        return StripeProvider(settings.stripe_api_key, settings.stripe_webhook_secret)
    return SimulatedProvider(settings.sim_url, settings.sim_secret)


class SimulatedProvider:
    """The built-in provider (dev and tests): the API serves it under ``/sim-pay``
    (``api/payments/simulator.py``); this client talks to it over HTTP like to any
    provider, with ``secret`` as its API key and webhook signing secret."""

    name = "simulated"

    def __init__(self, base_url: str, secret: str, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.secrets = [s for s in secret.split(",") if s]
        self.timeout_s = timeout_s

    async def aclose(self) -> None:
        """Nothing to release: each call opens its own client."""

    def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.base_url,
            timeout=self.timeout_s,
            headers={"authorization": f"Bearer {self.secrets[0]}"},
        )

    async def create(
        self, *, payment_id: str, amount: int, currency: str, description: str
    ) -> Checkout:
        body = SimIntentCreate(payment_id, amount, currency, description)
        try:
            async with self._client() as client:
                r = await client.post(
                    "/sim-pay/intents",
                    content=msgspec.json.encode(body),
                    headers={"content-type": "application/json", "idempotency-key": payment_id},
                )
        except httpx.HTTPError as exc:
            raise Unavailable(f"the payment provider is unreachable: {exc}") from exc
        if r.status_code >= 300:
            raise Unavailable(f"the payment provider answered {r.status_code}")
        intent = msgspec.json.decode(r.content, type=SimIntent)
        return Checkout(provider_ref=intent.intent, checkout_url=intent.checkout_url)

    async def refund(
        self, *, provider_ref: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundOutcome:
        body = SimRefundCreate(amount=amount, idempotency_key=idempotency_key)
        try:
            async with self._client() as client:
                r = await client.post(
                    f"/sim-pay/intents/{provider_ref}/refunds",
                    content=msgspec.json.encode(body),
                    headers={"content-type": "application/json"},
                )
        except httpx.HTTPError as exc:
            return RefundOutcome(ok=False, error=f"unreachable: {exc}")
        if r.status_code >= 300:
            return RefundOutcome(ok=False, error=f"provider answered {r.status_code}")
        res = msgspec.json.decode(r.content, type=SimRefund)
        return RefundOutcome(ok=res.status == "succeeded", provider_ref=res.refund, error=res.error)

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> PaymentEvent | None:
        verify(self.secrets, headers.get(SIM_SIGNATURE_HEADER), body)
        try:
            cb = _SIM_CALLBACK.decode(body)
        except msgspec.ValidationError as exc:
            raise InvalidInput(f"webhook body: {exc}") from None
        kind: Literal["succeeded", "failed"] = (
            "succeeded" if cb.type == "payment.succeeded" else "failed"
        )
        return PaymentEvent(
            event_ref=cb.id,
            provider_ref=cb.intent,
            kind=kind,
            amount=cb.amount,
            currency=cb.currency,
        )


# -- the refund record (shared by the API's refund endpoints and the payments worker) -------

_REFUND_TICKETS_SQL: Final = """
SELECT t.ticket_id::text AS ticket_id, t.seat_id, t.price_minor, t.currency,
       t.refunded_at IS NOT NULL AS refunded, c.ticket_id IS NOT NULL AS admitted
FROM orders.tickets t LEFT JOIN orders.checkins c ON c.ticket_id = t.ticket_id
WHERE t.order_id = $1
ORDER BY t.seat_id
"""


class RefundRecord(msgspec.Struct, frozen=True):
    """A refund just recorded (or found again): what the caller does next."""

    view: RefundView
    event_id: int
    partition: int
    seats: tuple[str, ...]
    created: bool


async def record_refund(
    conn: object,
    *,
    order_id: str,
    kind: RefundKind,
    actor: str,
    ticket_ids: Sequence[str] | None = None,
    reason: str | None = None,
) -> RefundRecord:
    """In the caller's transaction on ``conn`` (an asyncpg connection): write the refund of
    ``ticket_ids`` (all the order's tickets not refunded yet when None) and revoke those
    tickets, marking them refunded. The same request again finds the same refund
    (``refund_id_for``). RefundRefused for a ticket that is not the order's, was refunded
    already, or was admitted at the gate."""
    db: Any = conn
    order = await db.fetchrow(
        "SELECT order_id, event_id, partition, status FROM orders.orders"
        " WHERE order_id = $1 FOR UPDATE",
        uuid.UUID(order_id),
    )
    if order is None or order["status"] != "confirmed":
        raise RefundRefused(f"order {order_id} has no tickets to refund", order_id=order_id)
    tickets = await db.fetch(_REFUND_TICKETS_SQL, order["order_id"])
    by_id = {t["ticket_id"]: t for t in tickets}
    if ticket_ids is None:
        wanted = [t["ticket_id"] for t in tickets if not t["refunded"]]
    else:
        wanted = sorted({str(uuid.UUID(str(t))) for t in ticket_ids})
    refund_id = refund_id_for(kind, order_id, wanted if ticket_ids is not None else ())
    found = await db.fetchrow("SELECT * FROM payments.refunds WHERE refund_id = $1", refund_id)
    if found is not None:
        seats = tuple(by_id[t]["seat_id"] for t in map(str, found["ticket_ids"]) if t in by_id)
        return RefundRecord(
            refund_view(found), order["event_id"], order["partition"], seats, created=False
        )
    unknown = [t for t in wanted if t not in by_id]
    if unknown:
        raise InvalidInput(f"not tickets of order {order_id}: {unknown}", field="ticket_ids")
    done = [t for t in wanted if by_id[t]["refunded"]]
    if done or not wanted:
        raise RefundRefused(
            f"already refunded: {done or 'every ticket of the order'}", order_id=order_id
        )
    admitted = [t for t in wanted if by_id[t]["admitted"]]
    if admitted:
        raise RefundRefused(f"admitted at the gate, not refundable: {admitted}", tickets=admitted)
    amount = sum(by_id[t]["price_minor"] for t in wanted)
    currency = by_id[wanted[0]]["currency"]
    payment = await db.fetchrow(
        "SELECT payment_id FROM payments.payments WHERE order_id = $1"
        " AND status IN ('captured', 'refunding') FOR UPDATE",
        order["order_id"],
    )
    row = await db.fetchrow(
        "INSERT INTO payments.refunds (refund_id, order_id, payment_id, event_id, kind,"
        " ticket_ids, amount_minor, currency, reason, actor)"
        " VALUES ($1, $2, $3, $4, $5, $6::uuid[], $7, $8, $9, $10) RETURNING *",
        refund_id,
        order["order_id"],
        payment["payment_id"] if payment else None,
        order["event_id"],
        kind,
        wanted,
        amount,
        currency,
        reason,
        actor,
    )
    await db.execute(
        "UPDATE orders.tickets SET revoked_at = coalesce(revoked_at, clock_timestamp()),"
        " refunded_at = clock_timestamp() WHERE ticket_id = ANY($1::uuid[])",
        wanted,
    )
    left = sum(1 for t in tickets if not t["refunded"]) - len(wanted)
    if payment is not None and left == 0:
        await db.execute(
            "UPDATE payments.payments SET status = 'refunding', updated_at = now()"
            " WHERE payment_id = $1",
            payment["payment_id"],
        )
    seats = tuple(by_id[t]["seat_id"] for t in wanted)
    return RefundRecord(refund_view(row), order["event_id"], order["partition"], seats, True)


def refund_view(row: Any) -> RefundView:
    return RefundView(
        refund_id=str(row["refund_id"]),
        order_id=None if row["order_id"] is None else str(row["order_id"]),
        payment_id=None if row["payment_id"] is None else str(row["payment_id"]),
        kind=row["kind"],
        status=row["status"],
        amount=row["amount_minor"],
        currency=row["currency"],
        ticket_ids=tuple(str(t) for t in row["ticket_ids"]),
        reason=row["reason"],
        created_at=epoch_ms(row["created_at"]),
        refunded_at=epoch_ms_or_none(row["refunded_at"]),
    )


def payment_view(row: Any) -> PaymentView:
    return PaymentView(
        payment_id=str(row["payment_id"]),
        status=row["status"],
        hold_id=row["hold_id"],
        event_id=row["event_id"],
        amount=row["amount_minor"],
        currency=row["currency"],
        provider=row["provider"],
        checkout_url=row["checkout_url"],
        client_secret=row["client_secret"],
        order_id=None if row["order_id"] is None else str(row["order_id"]),
        reason=row["reason"],
        created_at=epoch_ms(row["created_at"]),
    )
