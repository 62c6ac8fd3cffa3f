"""Who may call what, over HTTP against the real Redis Cluster: bearer JWTs from the dev
issuer and from a remote issuer's JWKS, every way a token can be wrong (401), missing roles
and scopes (403), and partner client credentials."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, generate_private_key
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import RSAAlgorithm
from litestar import get
from litestar.di import NamedDependency
from redis.asyncio import RedisCluster

from api.auth import Principal, requires_role, requires_scope
from api.auth.dev_issuer import load_or_create_key
from core.settings import Settings
from tests.integration.api_servers import api_client, free_port, granian_server, with_overrides

PARTNER_SECRET = uuid.uuid4().hex  # made per run; never a real secret


@pytest.fixture(scope="module")
def auth_settings(settings: Settings) -> Settings:
    return with_overrides(
        settings,
        auth={"clients": f"acme={PARTNER_SECRET} holds orders;other=x2 orders"},
    )


@get("/api/v1/test-auth/admin", guards=[requires_role("admin")])
async def admin_only(principal: NamedDependency[Principal]) -> dict[str, str]:
    return {"sub": principal.sub}


@get("/api/v1/test-auth/partner", guards=[requires_scope("holds")])
async def partner_only(principal: NamedDependency[Principal]) -> dict[str, str]:
    return {"sub": principal.sub}


HANDLERS = [admin_only, partner_only]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def dev_token(client: Any, sub: str, roles: list[str] | None = None) -> str:
    body: dict[str, Any] = {"sub": sub}
    if roles is not None:
        body["roles"] = roles
    response = await client.post("/api/v1/auth/dev-token", json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["token_type"] == "Bearer" and data["expires_in"] > 0
    return str(data["access_token"])


def assert_401(response: httpx.Response, reason: str) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["www-authenticate"].startswith("Bearer")
    body = response.json()
    assert body["type"] == "https://ticketbuster.dev/problems/unauthorized"
    assert reason in body["detail"].lower(), body["detail"]


async def signing_key(redis_cluster: RedisCluster) -> tuple[RSAPrivateKey, str]:
    """The shared dev key (as every replica sees it) and its kid, to forge edge-case tokens."""
    from api.auth.dev_issuer import DevIssuer
    from core.settings import AuthSettings

    jwk = await load_or_create_key(redis_cluster)
    key = RSAAlgorithm.from_jwk(json.dumps(jwk))
    assert isinstance(key, RSAPrivateKey)
    return key, DevIssuer(AuthSettings(), jwk).kid


def claims(settings: Settings, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": settings.auth.issuer,
        "aud": settings.auth.audience,
        "sub": "edge-case-user",
        "iat": now,
        "exp": now + 300,
        "roles": ["buyer"],
    }
    base.update(overrides)
    return base


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _hmac_with_public_key(key: RSAPrivateKey, kid: str, body: dict[str, Any]) -> str:
    """The classic algorithm-confusion forgery: HS256 keyed with the issuer's public key."""
    public = key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    signing_input = _b64({"alg": "HS256", "typ": "JWT", "kid": kid}) + "." + _b64(body)
    mac = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


async def test_dev_token_grants_access_and_no_token_is_401(auth_settings: Settings) -> None:
    async with api_client(auth_settings) as client:
        assert_401(await client.get("/api/v1/me"), "bearer token is required")
        token = await dev_token(client, "alice")
        me = await client.get("/api/v1/me", headers=bearer(token))
        assert me.status_code == 200, me.text
        assert me.json() == {"sub": "alice", "roles": ["buyer"], "scopes": []}
        token = await dev_token(client, "sam", ["scanner", "admin"])
        me = await client.get("/api/v1/me", headers=bearer(token))
        assert me.json()["roles"] == ["admin", "scanner"]


async def test_dev_token_rejects_bad_requests(auth_settings: Settings) -> None:
    async with api_client(auth_settings) as client:
        for body, field in (
            ({"sub": "a", "roles": ["root"]}, "roles"),
            ({"sub": ""}, "sub"),
            ({"sub": "client:acme"}, "sub"),
            ({"sub": "a", "extra": 1}, "extra"),
        ):
            response = await client.post("/api/v1/auth/dev-token", json=body)
            assert response.status_code == 422, response.text
            assert response.json()["field"] == field


async def test_token_edge_cases_are_401(
    auth_settings: Settings, redis_cluster: RedisCluster
) -> None:
    key, kid = await signing_key(redis_cluster)
    s = auth_settings
    stranger = generate_private_key(public_exponent=65537, key_size=2048)
    good = jwt.encode(claims(s), key, algorithm="RS256", headers={"kid": kid})
    head, payload, signature = good.split(".")
    forged_payload = _b64(claims(s, sub="mallory", roles=["admin"]))
    flipped = signature[:-4] + ("AAAA" if signature[-4:] != "AAAA" else "BBBB")
    cases = {
        "expired": (
            jwt.encode(
                claims(s, iat=int(time.time()) - 7200, exp=int(time.time()) - 3600),
                key,
                algorithm="RS256",
                headers={"kid": kid},
            ),
            "expired",
        ),
        "wrong issuer": (
            jwt.encode(
                claims(s, iss="https://evil.example/"), key, algorithm="RS256", headers={"kid": kid}
            ),
            "issuer",
        ),
        "wrong audience": (
            jwt.encode(claims(s, aud="someone-else"), key, algorithm="RS256", headers={"kid": kid}),
            "audience",
        ),
        "alg none": (
            _b64({"alg": "none", "typ": "JWT", "kid": kid}) + "." + _b64(claims(s)) + ".",
            "algorithm",
        ),
        "unknown kid": (
            jwt.encode(claims(s), stranger, algorithm="RS256", headers={"kid": "not-a-known-kid"}),
            "unknown key",
        ),
        "signed by another key under our kid": (
            jwt.encode(claims(s), stranger, algorithm="RS256", headers={"kid": kid}),
            "signature",
        ),
        "tampered signature": (f"{head}.{payload}.{flipped}", "signature"),
        "tampered payload": (f"{head}.{forged_payload}.{signature}", "signature"),
        "hmac keyed with the public key": (_hmac_with_public_key(key, kid, claims(s)), "algorithm"),
        "no subject": (
            jwt.encode(
                {k: v for k, v in claims(s).items() if k != "sub"},
                key,
                algorithm="RS256",
                headers={"kid": kid},
            ),
            "invalid",
        ),
        "garbage": ("not.a.jwt", "malformed"),
    }
    async with api_client(auth_settings) as client:
        ok = await client.get("/api/v1/me", headers=bearer(good))
        assert ok.status_code == 200, ok.text  # the untampered token is fine
        for name, (token, reason) in cases.items():
            response = await client.get("/api/v1/me", headers=bearer(token))
            assert response.status_code == 401, f"{name}: {response.text}"
            assert_401(response, reason)


async def test_missing_role_or_scope_is_403(auth_settings: Settings) -> None:
    async with api_client(auth_settings, HANDLERS) as client:
        assert_401(await client.get("/api/v1/test-auth/admin"), "bearer token")
        buyer = await dev_token(client, "bob")
        forbidden = await client.get("/api/v1/test-auth/admin", headers=bearer(buyer))
        assert forbidden.status_code == 403
        assert forbidden.headers["content-type"].startswith("application/problem+json")
        assert forbidden.json()["type"] == "https://ticketbuster.dev/problems/forbidden"
        admin = await dev_token(client, "root", ["admin"])
        assert (
            await client.get("/api/v1/test-auth/admin", headers=bearer(admin))
        ).status_code == 200
        assert (
            await client.get("/api/v1/test-auth/partner", headers=bearer(admin))
        ).status_code == 403


async def test_partner_client_credentials(auth_settings: Settings) -> None:
    async with api_client(auth_settings, HANDLERS) as client:
        response = await client.post(
            "/api/v1/auth/token",
            data={"grant_type": "client_credentials", "scope": "holds"},
            auth=("acme", PARTNER_SECRET),
        )
        assert response.status_code == 200, response.text
        token = response.json()
        assert token["scope"] == "holds" and token["token_type"] == "Bearer"
        partner = await client.get(
            "/api/v1/test-auth/partner", headers=bearer(token["access_token"])
        )
        assert partner.json() == {"sub": "client:acme"}
        me = (await client.get("/api/v1/me", headers=bearer(token["access_token"]))).json()
        assert me == {"sub": "client:acme", "roles": [], "scopes": ["holds"]}
        # A partner is not an admin.
        admin = await client.get("/api/v1/test-auth/admin", headers=bearer(token["access_token"]))
        assert admin.status_code == 403

        # Credentials in the form; no scope asked -> all the client's scopes.
        response = await client.post(
            "/api/v1/auth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "acme",
                "client_secret": PARTNER_SECRET,
            },
        )
        assert response.json()["scope"] == "holds orders"

        wrong = await client.post(
            "/api/v1/auth/token", data={"grant_type": "client_credentials"}, auth=("acme", "guess")
        )
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        scope = await client.post(
            "/api/v1/auth/token",
            data={"grant_type": "client_credentials", "scope": "admin"},
            auth=("acme", PARTNER_SECRET),
        )
        assert scope.status_code == 422 and scope.json()["error"] == "invalid_scope"
        grant = await client.post(
            "/api/v1/auth/token", data={"grant_type": "password"}, auth=("acme", PARTNER_SECRET)
        )
        assert grant.status_code == 422 and grant.json()["error"] == "unsupported_grant_type"


async def test_discovery_and_jwks_verify_dev_tokens(auth_settings: Settings) -> None:
    async with api_client(auth_settings) as client:
        config = (await client.get("/.well-known/openid-configuration")).json()
        assert config["issuer"] == auth_settings.auth.issuer
        assert (await client.get("/dev-issuer/.well-known/openid-configuration")).json() == config
        jwks = (await client.get("/dev-issuer/jwks.json")).json()
        assert all("d" not in key for key in jwks["keys"])  # public halves only
        # Strict JWK parsers reject null members: absent, not null.
        assert all(value is not None for key in jwks["keys"] for value in key.values())
        token = await dev_token(client, "carol")
    kid = jwt.get_unverified_header(token)["kid"]
    key = jwt.PyJWKSet.from_dict(jwks)[kid]
    decoded = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=auth_settings.auth.audience,
        issuer=auth_settings.auth.issuer,
    )
    assert decoded["sub"] == "carol"


async def test_two_instances_share_the_dev_signing_key(auth_settings: Settings) -> None:
    async with api_client(auth_settings) as first, api_client(auth_settings) as second:
        token = await dev_token(first, "dave")
        me = await second.get("/api/v1/me", headers=bearer(token))
        assert me.status_code == 200 and me.json()["sub"] == "dave"


async def test_remote_issuer_jwks_discovered_and_cached(settings: Settings, tmp_path: Path) -> None:
    """An API without the dev issuer trusts another server's JWKS (found by OIDC discovery),
    as it would trust Keycloak in production."""
    port = free_port()
    issuer = f"http://127.0.0.1:{port}/dev-issuer"
    issuer_settings = with_overrides(settings, auth={"issuer": issuer})
    with granian_server(issuer_settings, tmp_path / "issuer.log", port=port) as server:
        async with httpx.AsyncClient(base_url=server.base_url) as http:
            token = (await http.post("/api/v1/auth/dev-token", json={"sub": "erin"})).json()[
                "access_token"
            ]
        relying = with_overrides(
            settings, auth={"issuer": issuer, "dev_issuer_enabled": False, "jwks_url": ""}
        )
        async with api_client(relying) as client:
            assert (await client.post("/api/v1/auth/dev-token", json={"sub": "x"})).status_code in (
                404,
                405,
            )
            me = await client.get("/api/v1/me", headers=bearer(token))
            assert me.status_code == 200, me.text
            assert me.json()["sub"] == "erin"
            stranger = jwt.encode(
                claims(relying, sub="eve"),
                Ed25519PrivateKey.generate(),
                algorithm="EdDSA",
                headers={"kid": "rotated-maybe"},
            )
            assert_401(await client.get("/api/v1/me", headers=bearer(stranger)), "unknown key")


async def test_openapi_documents_who_may_call_what(auth_settings: Settings) -> None:
    async with api_client(auth_settings, HANDLERS) as client:
        schema = (await client.get("/schema/openapi.json")).json()
    admin = schema["paths"]["/api/v1/test-auth/admin"]["get"]
    assert {"401", "403"} <= set(admin["responses"])
    assert admin["security"] == [{"BearerToken": []}]
    problem = admin["responses"]["403"]["content"]["application/problem+json"]["schema"]
    assert problem == {"$ref": "#/components/schemas/Problem"}
    me = schema["paths"]["/api/v1/me"]["get"]
    assert "401" in me["responses"] and "403" not in me["responses"]
    assert "security" not in schema["paths"]["/api/v1/auth/dev-token"]["post"]
    assert schema["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
