"""Partners through an OIDC provider: hold -> order -> tickets with exactly the scopes the
guards check (``holds``, ``orders``), and the refusals without them.

The provider is an OIDC issuer served over HTTP by this test (discovery document and
JWKS, RS256), minting tokens shaped as Keycloak's client-credentials grant does: the
subject is the service account's user id, the client is in ``azp`` and ``client_id``,
the scopes in ``scope``, default realm roles in ``realm_access``. The API finds the JWKS
by discovery, as in production. The workers (persister, ticket issuer) run in-process on
the session's topics; Redis Cluster, PostgreSQL and the broker are the real servers.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, generate_private_key
from jwt.algorithms import RSAAlgorithm

from core.inventory import partition_keys
from core.settings import Settings
from core.tickets import verify_ticket
from tests.integration.api_servers import api_client, with_overrides
from tests.integration.catalog_seed import cluster_client, seed_test_event
from workers.issuer import create_issuer
from workers.persister import create_persister
from workers.runtime import ensure_topics

pytestmark = pytest.mark.slow

REALM = "/realms/ticketbuster"
KID = "kc-rs256-1"


class Provider:
    """Discovery + JWKS of one RSA key, on a loopback port; tokens minted with its key."""

    def __init__(self) -> None:
        self.key: RSAPrivateKey = generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(RSAAlgorithm.to_jwk(self.key.public_key()))
        jwk.update({"kid": KID, "alg": "RS256", "use": "sig"})
        self.jwks = {"keys": [jwk]}
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == f"{REALM}/.well-known/openid-configuration":
                    body: dict[str, Any] = {
                        "issuer": provider.issuer,
                        "jwks_uri": f"{provider.issuer}/protocol/openid-connect/certs",
                        "token_endpoint": f"{provider.issuer}/protocol/openid-connect/token",
                        "grant_types_supported": ["client_credentials", "authorization_code"],
                    }
                elif self.path == f"{REALM}/protocol/openid-connect/certs":
                    body = provider.jwks
                else:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.issuer = f"http://127.0.0.1:{self.server.server_address[1]}{REALM}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Provider:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def client_token(self, client: str, scope: str, roles: tuple[str, ...] = ("buyer",)) -> str:
        """A client-credentials access token as Keycloak issues it."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "aud": ["ticketbuster", "account"],
            "sub": str(uuid.uuid5(uuid.NAMESPACE_URL, client)),
            "typ": "Bearer",
            "azp": client,
            "client_id": client,
            "preferred_username": f"service-account-{client}",
            "scope": scope,
            "realm_access": {"roles": ["default-roles-ticketbuster", "offline_access", *roles]},
            "iat": now,
            "exp": now + 300,
            "jti": uuid.uuid4().hex,
        }
        return jwt.encode(claims, self.key, algorithm="RS256", headers={"kid": KID})


@dataclass
class Stack:
    http: Any
    provider: Provider
    event_id: int
    seats: list[str]

    def take(self, n: int) -> list[str]:
        out, self.seats = self.seats[:n], self.seats[n:]
        return out


@pytest.fixture(scope="module")
def provider() -> Iterator[Provider]:
    with Provider() as running:
        yield running


@pytest.fixture(scope="module")
async def stack(
    settings: Settings,
    pg_dsn: str,
    services: dict[str, str],
    provider: Provider,
    tmp_path_factory: Any,
) -> AsyncIterator[Stack]:
    key_dir = Path(tmp_path_factory.mktemp("partner-keys"))
    config = with_overrides(
        settings,
        database={"url": pg_dsn},
        kafka={"topic_prefix": f"{settings.kafka.topic_prefix}partners."},
        api={"rate_limit_enabled": False},
        auth={
            "issuer": provider.issuer,
            "jwks_url": "",  # found by discovery
            "dev_issuer_enabled": False,
            "partner_clients": "acme,globex",
        },
        tickets={"signing_key_path": str(key_dir / "signing.pem")},
        workers={"persister_port": 0, "issuer_port": 0},
    )
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    event_id, seats = await seed_test_event(
        pg_dsn,
        redis,
        name="Partner sale",
        address="Loopback 3",
        days_ahead=20,
        base_price_minor=8_000,
        capacity=60,
    )
    await ensure_topics(config)
    apps = [create_persister(config), create_issuer(config)]
    for app in apps:
        await app.start()
    try:
        async with api_client(config) as http:
            yield Stack(http, provider, event_id, sorted(seats))
    finally:
        for app in apps:
            await app.stop()
        for key in partition_keys(event_id, 0):
            await redis.delete(key)
        await redis.aclose()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def until(probe: Any, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = await probe()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


async def test_a_providers_partner_token_is_the_partner(stack: Stack) -> None:
    token = stack.provider.client_token("acme", "profile email holds orders")
    me = await stack.http.get("/api/v1/me", headers=bearer(token))
    assert me.status_code == 200, me.text
    body = me.json()
    assert body["sub"] == "client:acme"
    assert body["roles"] == []  # the service account's default realm roles do not count
    assert {"holds", "orders"} <= set(body["scopes"])
    # The same shape from a client that is not a registered partner is a person.
    other = stack.provider.client_token("ticketbuster-pwa", "profile email")
    me = (await stack.http.get("/api/v1/me", headers=bearer(other))).json()
    assert me["sub"] != "client:ticketbuster-pwa" and me["roles"] == ["buyer"]


async def test_partner_hold_order_tickets_with_exactly_the_checked_scopes(stack: Stack) -> None:
    token = bearer(stack.provider.client_token("acme", "holds orders"))
    seats = stack.take(2)
    hold = await stack.http.post(
        f"/api/v1/events/{stack.event_id}/holds", json={"seats": seats}, headers=token
    )
    assert hold.status_code == 201, hold.text
    order = await stack.http.post(
        "/api/v1/orders",
        json={"hold_id": hold.json()["hold_id"]},
        headers={**token, "Idempotency-Key": uuid.uuid4().hex},
    )
    assert order.status_code == 202, order.text
    order_id = order.json()["order_id"]

    async def confirmed() -> Any:
        r = await stack.http.get(f"/api/v1/orders/{order_id}", headers=token)
        assert r.status_code == 200, r.text
        return r.json() if r.json()["status"] == "confirmed" else None

    # The partner names its end customer on the order (pending or decided).
    label = await stack.http.put(
        f"/api/v1/orders/{order_id}/customer", json={"customer_ref": "cust-4711"}, headers=token
    )
    assert label.status_code == 200, label.text
    assert label.json() == {
        "order_id": order_id,
        "partner": "client:acme",
        "customer_ref": "cust-4711",
    }

    view = await until(confirmed)
    assert sorted(t["seat_id"] for t in view["tickets"]) == seats
    # Support finds the order by the partner's customer reference.
    support = bearer(stack.provider.client_token("ticketbuster-pwa", "profile", roles=("admin",)))
    found = await stack.http.get(
        "/api/v1/support/orders", params={"customer_ref": "cust-4711"}, headers=support
    )
    assert found.status_code == 200, found.text
    assert [(o["order_id"], o["customer_ref"]) for o in found.json()["items"]] == [
        (order_id, "cust-4711")
    ]

    ticket_id = view["tickets"][0]["ticket_id"]

    async def issued() -> Any:
        r = await stack.http.get(f"/api/v1/tickets/{ticket_id}", headers=token)
        assert r.status_code == 200, r.text
        return r.json()["token"]

    signed = await until(issued)
    jwks = (await stack.http.get("/api/v1/tickets/jwks.json")).json()
    claims = verify_ticket(signed, jwks)
    assert (claims.holder, claims.event, claims.order) == ("client:acme", stack.event_id, order_id)
    # Another partner sees none of it.
    globex = bearer(stack.provider.client_token("globex", "holds orders"))
    assert (await stack.http.get(f"/api/v1/orders/{order_id}", headers=globex)).status_code == 404
    path = f"/api/v1/orders/{order_id}/customer"
    assert (
        await stack.http.put(path, json={"customer_ref": "x"}, headers=globex)
    ).status_code == 404
    person = bearer(stack.provider.client_token("ticketbuster-pwa", "profile email orders"))
    assert (
        await stack.http.put(path, json={"customer_ref": "x"}, headers=person)
    ).status_code == 403
    bad = await stack.http.put(path, json={"customer_ref": " spaced"}, headers=token)
    assert bad.status_code == 422 and bad.json()["field"] == "customer_ref"


async def test_refusals_without_the_scopes(stack: Stack) -> None:
    holds_only = bearer(stack.provider.client_token("acme", "holds"))
    orders_only = bearer(stack.provider.client_token("acme", "orders"))
    neither = bearer(stack.provider.client_token("acme", "profile email"))

    def forbidden(response: Any, scope: str) -> None:
        assert response.status_code == 403, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["type"].endswith("/forbidden")
        assert f"scope {scope}" in response.json()["detail"]

    path = f"/api/v1/events/{stack.event_id}/holds"
    forbidden(
        await stack.http.post(path, json={"seats": stack.take(1)}, headers=orders_only), "holds"
    )
    forbidden(await stack.http.post(path, json={"seats": stack.take(1)}, headers=neither), "holds")

    hold = await stack.http.post(path, json={"seats": stack.take(1)}, headers=holds_only)
    assert hold.status_code == 201, hold.text
    hold_id = hold.json()["hold_id"]
    forbidden(
        await stack.http.post(
            "/api/v1/orders",
            json={"hold_id": hold_id},
            headers={**holds_only, "Idempotency-Key": uuid.uuid4().hex},
        ),
        "orders",
    )
    # A partner is never a scanner or an admin, whatever its scopes.
    scanner = await stack.http.post(
        "/api/v1/checkins",
        json={"token": "x", "event_id": stack.event_id, "gate": "main"},
        headers=bearer(stack.provider.client_token("acme", "holds orders scanner admin")),
    )
    assert scanner.status_code == 403
    released = await stack.http.delete(f"/api/v1/holds/{hold_id}", headers=holds_only)
    assert released.status_code == 204
