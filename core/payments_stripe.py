"""The Stripe adapter of ``PaymentProvider`` (core/payments.py), on the official ``stripe``
package. See docs/decisions/1101-payments-saga.md.

A payment is a PaymentIntent (automatic capture, ``metadata.payment_id``) created with the
payment id as its Idempotency-Key, so a retried ``create`` finds the same intent; the page
confirms it with Stripe.js and the PaymentIntent's client secret. A refund is a Refund of
that intent for the amount given, keyed by the refund's own idempotency key. The outcome
comes back as a signed webhook: ``payment_intent.succeeded`` and
``payment_intent.payment_failed`` become a ``PaymentEvent``; every other type is ignored.

Webhook signatures are checked by the package (``WebhookSignature.verify_header``, at most
300 s old) against each of the secrets, "new,old" during a rotation. The client is a
``StripeClient`` of our own (no module-level ``stripe.api_key``) on the package's httpx
client, called through the ``*_async`` methods. ``api_base`` points it at another server
(tests). Amounts are in minor units; Stripe's currencies are lower case, ours upper case.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final, Literal

import msgspec
import stripe

from core.errors import InvalidInput, Unavailable
from core.payments import (
    SIGNATURE_TOLERANCE_S,
    Checkout,
    InvalidSignature,
    PaymentEvent,
    RefundOutcome,
)

# Stripe's webhook signature header (Stripe-Signature), as the mapping spells it.
STRIPE_SIGNATURE_HEADER: Final = "stripe-signature"
# The client retries a connection error or a 409/5xx once (with the same Idempotency-Key);
# the payments worker and the buyer retry after that.
MAX_NETWORK_RETRIES: Final = 1
# Refund statuses after which the money is (or will be) paid back without us.
_REFUND_OK: Final = frozenset({"succeeded", "pending"})

_KINDS: Final[Mapping[str, Literal["succeeded", "failed"]]] = {
    "payment_intent.succeeded": "succeeded",
    "payment_intent.payment_failed": "failed",
}


class _Envelope(msgspec.Struct):
    """An event's id and type; ``data`` is decoded once the type is one we handle."""

    id: str
    type: str
    data: msgspec.Raw


class _Intent(msgspec.Struct):
    id: str
    amount: int
    currency: str
    amount_received: int = 0


class _IntentData(msgspec.Struct):
    object: _Intent


# (payload, header, secret, tolerance): raises stripe.SignatureVerificationError. Typed here
# because the package's own signature is unannotated before 15.3.
_verify_header: Final[Callable[[str, str, str, int | None], object]] = (
    stripe.WebhookSignature.verify_header
)

_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_INTENT_DATA: Final = msgspec.json.Decoder(_IntentData)


def _describe(exc: stripe.StripeError) -> str:
    """A Stripe error in one line: its code (or class) and Stripe's own message."""
    return f"{exc.code or type(exc).__name__}: {_message(exc)}"


def _message(exc: stripe.StripeError) -> str:
    return " ".join(str(exc.user_message or exc).split())


class StripeProvider:
    """Payments through Stripe's API (PaymentIntents, Refunds, signed webhooks)."""

    name = "stripe"

    def __init__(
        self,
        api_key: str,
        webhook_secret: str,
        api_base: str | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.secrets = [s.strip() for s in webhook_secret.split(",") if s.strip()]
        self._http = stripe.HTTPXClient(timeout=timeout_s)
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base} if api_base else {},
            max_network_retries=MAX_NETWORK_RETRIES,
            http_client=self._http,
        )

    async def aclose(self) -> None:
        """Close the HTTP connections (the provider is unusable afterwards)."""
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def create(
        self, *, payment_id: str, amount: int, currency: str, description: str
    ) -> Checkout:
        try:
            intent = await self._client.v1.payment_intents.create_async(
                {
                    "amount": amount,
                    "currency": currency.lower(),
                    "capture_method": "automatic",
                    "description": description,
                    "metadata": {"payment_id": payment_id},
                },
                {"idempotency_key": payment_id},
            )
        except stripe.APIConnectionError as exc:
            raise Unavailable(f"Stripe is unreachable: {_message(exc)}") from exc
        except stripe.StripeError as exc:
            raise Unavailable(f"Stripe refused the payment intent: {_describe(exc)}") from exc
        return Checkout(provider_ref=intent.id, client_secret=intent.client_secret)

    async def refund(
        self, *, provider_ref: str, amount: int, currency: str, idempotency_key: str
    ) -> RefundOutcome:
        # The refund is in the intent's currency; Stripe takes no currency for it.
        try:
            refund = await self._client.v1.refunds.create_async(
                {"payment_intent": provider_ref, "amount": amount},
                {"idempotency_key": idempotency_key},
            )
        except stripe.APIConnectionError as exc:
            return RefundOutcome(ok=False, error=f"unreachable: {_message(exc)}")
        except stripe.StripeError as exc:
            return RefundOutcome(ok=False, error=_describe(exc))
        if refund.status in _REFUND_OK:
            return RefundOutcome(ok=True, provider_ref=refund.id)
        reason = getattr(refund, "failure_reason", None) or refund.status
        return RefundOutcome(ok=False, provider_ref=refund.id, error=f"refund {reason}")

    def parse_webhook(self, headers: Mapping[str, str], body: bytes) -> PaymentEvent | None:
        self._verify(headers.get(STRIPE_SIGNATURE_HEADER), body)
        try:
            event = _ENVELOPE.decode(body)
            kind = _KINDS.get(event.type)
            if kind is None:
                return None
            intent = _INTENT_DATA.decode(event.data).object
        except msgspec.DecodeError as exc:
            raise InvalidInput(f"webhook body: {exc}") from None
        return PaymentEvent(
            event_ref=event.id,
            provider_ref=intent.id,
            kind=kind,
            amount=intent.amount_received if kind == "succeeded" else intent.amount,
            currency=intent.currency.upper(),
        )

    def _verify(self, header: str | None, body: bytes) -> None:
        """Raise InvalidSignature unless one of the secrets signed ``body`` recently."""
        if not header:
            raise InvalidSignature("the webhook carries no Stripe-Signature header")
        if not self.secrets:
            raise InvalidSignature("no Stripe webhook secret is configured")
        try:
            payload = body.decode()
        except UnicodeDecodeError:
            raise InvalidSignature("the webhook body is not UTF-8") from None
        # The package checks the signature before the age: with no tolerance it answers
        # whether this secret signed the body, then with one whether it did so recently.
        error = ""
        for secret in self.secrets:
            try:
                _verify_header(payload, header, secret, None)
            except stripe.SignatureVerificationError as exc:
                error = str(exc)
                continue
            try:
                _verify_header(payload, header, secret, SIGNATURE_TOLERANCE_S)
            except stripe.SignatureVerificationError:
                raise InvalidSignature(
                    f"the webhook's signature is more than {SIGNATURE_TOLERANCE_S} s old"
                ) from None
            return
        raise InvalidSignature(f"the webhook's signature does not verify: {error}")
