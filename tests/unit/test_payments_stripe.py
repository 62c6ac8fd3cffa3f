"""The Stripe adapter (core/payments_stripe.py) against recorded-shape Stripe payloads.

Webhooks are signed here with Stripe's scheme; the API calls go to a small HTTP server on
127.0.0.1 that replays the JSON under data/stripe/ and records each request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from core.errors import Unavailable
from core.payments import InvalidSignature, PaymentEvent, RefundOutcome
from core.payments_stripe import StripeProvider

# stripe's HTTPXClient hands httpx the form body as ``data=<str>``, which httpx deprecates.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Use 'content=<...>' to upload raw bytes/text content.:DeprecationWarning"
)

DATA = Path(__file__).parent / "data" / "stripe"
SECRET = "whsec_test_9f2c1d7e4b8a6035c1e2d3f4a5b6c7d8"
OLD_SECRET = "whsec_test_0a1b2c3d4e5f60718293a4b5c6d7e8f9"
API_KEY = "sk_test_51QzK0aLkdIwHu7ixTicketBusterUnitTests"
PAYMENT_ID = "5b0f9a52-3c1e-5d7a-9e43-6a2f1c8d0b11"
INTENT = "pi_3QzK8uLkdIwHu7ix0Rb1vT4m"


def recorded(name: str) -> bytes:
    return (DATA / f"{name}.json").read_bytes()


def signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """Stripe's ``Stripe-Signature``: ``t=<unix s>,v1=<hex HMAC-SHA256 of "t.body">``."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def provider(secret: str = SECRET, api_base: str | None = None) -> StripeProvider:
    return StripeProvider(API_KEY, secret, api_base=api_base, timeout_s=5.0)


# -- webhooks --------------------------------------------------------------------------------


def test_a_signed_succeeded_event_verifies_and_maps() -> None:
    body = recorded("event_payment_intent_succeeded")
    event = provider().parse_webhook({"stripe-signature": signature(SECRET, body)}, body)
    assert event == PaymentEvent(
        event_ref="evt_3QzK8uLkdIwHu7ix0Nf6hJ8q",
        provider_ref=INTENT,
        kind="succeeded",
        amount=2500,
        currency="EUR",
    )


def test_a_signed_failed_event_maps_with_the_intent_amount() -> None:
    body = recorded("event_payment_intent_payment_failed")
    event = provider().parse_webhook({"stripe-signature": signature(SECRET, body)}, body)
    assert event == PaymentEvent(
        event_ref="evt_3QzL2cLkdIwHu7ix1Hc3pR7t",
        provider_ref="pi_3QzL1xLkdIwHu7ix1Gk5nB8e",
        kind="failed",
        amount=4200,
        currency="EUR",
    )


def test_an_unrelated_event_type_is_ignored() -> None:
    body = recorded("event_charge_succeeded")
    assert provider().parse_webhook({"stripe-signature": signature(SECRET, body)}, body) is None


def test_both_secrets_of_a_rotation_verify() -> None:
    body = recorded("event_payment_intent_succeeded")
    rotating = provider(f"{SECRET}, {OLD_SECRET}")
    for secret in (SECRET, OLD_SECRET):
        event = rotating.parse_webhook({"stripe-signature": signature(secret, body)}, body)
        assert event is not None
        assert event.provider_ref == INTENT


def test_a_header_with_the_old_and_the_new_signature_verifies() -> None:
    # During a rotation Stripe sends one v1 per secret in the same header.
    body = recorded("event_payment_intent_succeeded")
    ts = int(time.time())
    other = signature("whsec_someone_else", body, ts).split(",")[1]
    header = f"{signature(SECRET, body, ts)},{other}"
    assert provider().parse_webhook({"stripe-signature": header}, body) is not None


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("wrong secret", "does not verify"),
        ("tampered body", "does not verify"),
        ("old timestamp", "more than 300 s old"),
        ("missing header", "no Stripe-Signature header"),
        ("empty header", "no Stripe-Signature header"),
        ("garbage header", "does not verify"),
        ("no v1", "does not verify"),
    ],
)
def test_a_bad_signature_is_refused(case: str, message: str) -> None:
    body = recorded("event_payment_intent_succeeded")
    headers: dict[str, str] = {"stripe-signature": signature(SECRET, body)}
    if case == "wrong secret":
        headers["stripe-signature"] = signature("whsec_not_ours", body)
    elif case == "tampered body":
        body = body.replace(b'"amount_received": 2500', b'"amount_received": 2')
    elif case == "old timestamp":
        headers["stripe-signature"] = signature(SECRET, body, int(time.time()) - 301)
    elif case == "missing header":
        headers = {}
    elif case == "empty header":
        headers["stripe-signature"] = ""
    elif case == "garbage header":
        headers["stripe-signature"] = "t=yesterday,v1=abc"
    elif case == "no v1":
        headers["stripe-signature"] = signature(SECRET, body).replace("v1=", "v0=")
    with pytest.raises(InvalidSignature, match=message) as refused:
        provider(f"{SECRET},{OLD_SECRET}").parse_webhook(headers, body)
    assert refused.value.status == 400


def test_an_old_signature_of_the_second_secret_is_too_old_not_unknown() -> None:
    body = recorded("event_payment_intent_succeeded")
    header = signature(OLD_SECRET, body, int(time.time()) - 3600)
    with pytest.raises(InvalidSignature, match="more than 300 s old"):
        provider(f"{SECRET},{OLD_SECRET}").parse_webhook({"stripe-signature": header}, body)


def test_no_configured_secret_refuses_every_webhook() -> None:
    body = recorded("event_payment_intent_succeeded")
    with pytest.raises(InvalidSignature, match="no Stripe webhook secret"):
        provider("").parse_webhook({"stripe-signature": signature("", body)}, body)


def test_a_body_that_is_not_utf8_is_refused_as_a_bad_signature() -> None:
    body = b"\xff\xfe{}"
    with pytest.raises(InvalidSignature, match="not UTF-8"):
        provider().parse_webhook({"stripe-signature": signature(SECRET, body)}, body)


# -- the API, against a local replaying server -----------------------------------------------


@dataclass
class Recorded:
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, list[str]]


@dataclass
class Replayer:
    """Answers each request with the next queued (status, body) and records it."""

    url: str = ""
    replies: list[tuple[int, bytes]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)


@pytest.fixture
def stripe_api() -> Iterator[Replayer]:
    replayer = Replayer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length).decode()
            replayer.requests.append(
                Recorded(
                    self.command,
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    parse_qs(body),
                )
            )
            status, reply = replayer.replies.pop(0)
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.send_header("request-id", f"req_unit{len(replayer.requests)}")
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    replayer.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield replayer
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
async def client(stripe_api: Replayer) -> AsyncIterator[StripeProvider]:
    p = provider(api_base=stripe_api.url)
    try:
        yield p
    finally:
        await p.aclose()


def refund_reply(**changes: Any) -> bytes:
    refund = json.loads(recorded("refund"))
    refund.update(changes)
    return json.dumps(refund).encode()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


async def test_create_sends_the_intent_and_maps_the_reply(
    stripe_api: Replayer, client: StripeProvider
) -> None:
    stripe_api.replies.append((200, recorded("payment_intent")))
    checkout = await client.create(
        payment_id=PAYMENT_ID, amount=2500, currency="EUR", description="hold h-7f3a"
    )
    assert checkout.provider_ref == INTENT
    assert checkout.client_secret == f"{INTENT}_secret_pQd9WcW0n3mXgYb2a8sK7EJvR"
    assert checkout.checkout_url is None
    [req] = stripe_api.requests
    assert (req.method, req.path) == ("POST", "/v1/payment_intents")
    assert req.headers["authorization"] == f"Bearer {API_KEY}"
    assert req.headers["idempotency-key"] == PAYMENT_ID
    assert req.headers["content-type"] == "application/x-www-form-urlencoded"
    assert req.form == {
        "amount": ["2500"],
        "currency": ["eur"],
        "capture_method": ["automatic"],
        "description": ["hold h-7f3a"],
        "metadata[payment_id]": [PAYMENT_ID],
    }


async def test_create_retries_a_500_once_with_the_same_idempotency_key(
    stripe_api: Replayer, client: StripeProvider
) -> None:
    stripe_api.replies += [(500, recorded("error_api")), (200, recorded("payment_intent"))]
    checkout = await client.create(
        payment_id=PAYMENT_ID, amount=2500, currency="eur", description=""
    )
    assert checkout.provider_ref == INTENT
    assert [r.headers["idempotency-key"] for r in stripe_api.requests] == [PAYMENT_ID] * 2


async def test_create_answered_with_errors_is_unavailable(
    stripe_api: Replayer, client: StripeProvider
) -> None:
    stripe_api.replies += [(500, recorded("error_api"))] * 2
    with pytest.raises(Unavailable, match="An unknown error occurred") as failed:
        await client.create(payment_id=PAYMENT_ID, amount=2500, currency="eur", description="")
    assert failed.value.status == 503
    assert len(stripe_api.requests) == 2


async def test_create_refused_as_invalid_is_unavailable(
    stripe_api: Replayer, client: StripeProvider
) -> None:
    stripe_api.replies.append((400, recorded("error_charge_already_refunded")))
    with pytest.raises(Unavailable, match="charge_already_refunded"):
        await client.create(payment_id=PAYMENT_ID, amount=2500, currency="eur", description="")


async def test_create_with_the_connection_refused_is_unavailable() -> None:
    p = provider(api_base=f"http://127.0.0.1:{closed_port()}")
    try:
        with pytest.raises(Unavailable, match="Stripe is unreachable"):
            await p.create(payment_id=PAYMENT_ID, amount=2500, currency="eur", description="")
    finally:
        await p.aclose()


async def test_refund_sends_the_refund_and_maps_the_reply(
    stripe_api: Replayer, client: StripeProvider
) -> None:
    stripe_api.replies.append((200, recorded("refund")))
    outcome = await client.refund(
        provider_ref=INTENT, amount=1250, currency="EUR", idempotency_key="rf-1"
    )
    assert outcome == RefundOutcome(ok=True, provider_ref="re_3QzK8uLkdIwHu7ix0Wq2mZ5c")
    [req] = stripe_api.requests
    assert (req.method, req.path) == ("POST", "/v1/refunds")
    assert req.headers["authorization"] == f"Bearer {API_KEY}"
    assert req.headers["idempotency-key"] == "rf-1"
    assert req.form == {"payment_intent": [INTENT], "amount": ["1250"]}


async def test_a_pending_refund_is_ok(stripe_api: Replayer, client: StripeProvider) -> None:
    stripe_api.replies.append((200, refund_reply(status="pending")))
    outcome = await client.refund(
        provider_ref=INTENT, amount=1250, currency="EUR", idempotency_key="rf-2"
    )
    assert outcome.ok


async def test_a_failed_refund_is_not_ok_with_its_reason(
    stripe_api: Replayer, client: StripeProvider
) -> None:
    stripe_api.replies.append(
        (200, refund_reply(status="failed", failure_reason="expired_or_canceled_card"))
    )
    outcome = await client.refund(
        provider_ref=INTENT, amount=1250, currency="EUR", idempotency_key="rf-3"
    )
    assert outcome == RefundOutcome(
        ok=False,
        provider_ref="re_3QzK8uLkdIwHu7ix0Wq2mZ5c",
        error="refund expired_or_canceled_card",
    )


async def test_a_card_error_on_refund_is_not_ok(
    stripe_api: Replayer, client: StripeProvider
) -> None:
    stripe_api.replies.append((402, recorded("error_card_declined")))
    outcome = await client.refund(
        provider_ref=INTENT, amount=1250, currency="EUR", idempotency_key="rf-4"
    )
    assert outcome == RefundOutcome(ok=False, error="card_declined: Your card was declined.")
    assert len(stripe_api.requests) == 1


async def test_an_invalid_refund_is_not_ok(stripe_api: Replayer, client: StripeProvider) -> None:
    stripe_api.replies.append((400, recorded("error_charge_already_refunded")))
    outcome = await client.refund(
        provider_ref=INTENT, amount=1250, currency="EUR", idempotency_key="rf-5"
    )
    assert not outcome.ok
    assert outcome.error == (
        "charge_already_refunded: Charge ch_3QzK8uLkdIwHu7ix0Aw7fGh2 has already been refunded."
    )


async def test_a_refund_with_the_connection_refused_is_not_ok() -> None:
    p = provider(api_base=f"http://127.0.0.1:{closed_port()}")
    try:
        outcome = await p.refund(
            provider_ref=INTENT, amount=1250, currency="EUR", idempotency_key="rf-6"
        )
    finally:
        await p.aclose()
    assert not outcome.ok
    assert outcome.error is not None
    assert outcome.error.startswith("unreachable: ")
