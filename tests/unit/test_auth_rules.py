"""Token rules that need no server: claims -> Principal, algorithm allow-list, JWKS cache,
partner client parsing, and which address counts for rate limits."""

from __future__ import annotations

from typing import Any

import jwt
import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from api.auth.dev_issuer import parse_clients
from api.auth.tokens import JwksCache, allowed_algorithms, principal_from_claims
from api.ratelimit import client_ip, parse_trusted_proxies
from core.settings import AuthSettings


def test_roles_default_to_buyer_and_unknown_roles_are_dropped() -> None:
    p = principal_from_claims({"sub": "alice", "roles": ["superuser"]})
    assert p.roles == frozenset({"buyer"})
    p = principal_from_claims({"sub": "bob", "realm_access": {"roles": ["admin", "offline"]}})
    assert p.roles == frozenset({"admin"})


def test_partner_clients_get_scopes_and_no_roles() -> None:
    p = principal_from_claims({"sub": "client:acme", "scope": "events:read holds:write"})
    assert p.is_client
    assert p.roles == frozenset()
    assert p.has_scope("holds:write") and not p.has_scope("orders:write")


@pytest.mark.parametrize("algs", ["none", "HS256", "EdDSA,none", ""])
def test_algorithm_allow_list_refuses_none_and_hmac(algs: str) -> None:
    with pytest.raises(ValueError, match="TB_AUTH_ALGORITHMS"):
        allowed_algorithms(AuthSettings(algorithms=algs))


def test_clients_spec() -> None:
    clients = parse_clients("acme=s3cret events:read holds:write; beta=sha256:" + "0" * 64)
    assert clients["acme"].scopes == frozenset({"events:read", "holds:write"})
    assert clients["acme"].check_secret("s3cret") and not clients["acme"].check_secret("x")
    assert clients["beta"].scopes == frozenset()
    with pytest.raises(ValueError):
        parse_clients("broken")


def _jwk(kid: str) -> dict[str, Any]:
    public = OKPAlgorithm.to_jwk(Ed25519PrivateKey.generate().public_key(), as_dict=True)
    return {**public, "kid": kid, "use": "sig", "alg": "EdDSA"}


async def test_unknown_kid_refreshes_but_not_more_than_the_interval_allows() -> None:
    calls = 0
    keys = [_jwk("k1")]

    async def fetch() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return {"keys": keys}

    cache = JwksCache(fetch, min_refresh_interval_s=60)
    assert await cache.get("k1") is not None
    assert calls == 1
    for _ in range(20):  # a flood of made-up kids
        assert await cache.get("made-up") is None
    assert calls == 1


async def test_rotated_key_is_found_by_refreshing() -> None:
    keys = [_jwk("old")]

    async def fetch() -> dict[str, Any]:
        return {"keys": keys}

    cache = JwksCache(fetch, min_refresh_interval_s=0)
    assert isinstance(await cache.get("old"), jwt.PyJWK)
    keys.append(_jwk("new"))
    assert isinstance(await cache.get("new"), jwt.PyJWK)


async def test_failed_refresh_keeps_old_keys() -> None:
    fail = False

    async def fetch() -> dict[str, Any]:
        if fail:
            raise OSError("issuer down")
        return {"keys": [_jwk("k1")]}

    cache = JwksCache(fetch, min_refresh_interval_s=0, max_age_s=0)
    assert await cache.get("k1") is not None
    fail = True
    assert await cache.get("k1") is not None


def _scope(peer: str, xff: str | None = None) -> Any:
    headers = [(b"x-forwarded-for", xff.encode())] if xff else []
    return {"type": "http", "client": (peer, 1234), "headers": headers}


def test_forwarded_for_is_ignored_from_untrusted_peers() -> None:
    trusted = parse_trusted_proxies("10.0.0.0/8")
    assert client_ip(_scope("203.0.113.9", "1.2.3.4"), trusted) == "203.0.113.9"
    assert client_ip(_scope("203.0.113.9", "1.2.3.4"), []) == "203.0.113.9"


def test_forwarded_for_from_a_trusted_proxy_names_the_client() -> None:
    trusted = parse_trusted_proxies("10.0.0.0/8, 192.168.1.1")
    # Spoofed left-most entry is ignored: the right-most untrusted address counts.
    assert (
        client_ip(_scope("10.1.1.1", "6.6.6.6, 198.51.100.7, 10.2.2.2"), trusted) == "198.51.100.7"
    )
    assert client_ip(_scope("192.168.1.1", "198.51.100.8"), trusted) == "198.51.100.8"


def test_principal_is_a_frozen_struct() -> None:
    p = principal_from_claims({"sub": "alice"})
    with pytest.raises(AttributeError):
        p.sub = "mallory"  # type: ignore[misc]
    assert msgspec.json.decode(msgspec.json.encode(p))["sub"] == "alice"


def test_bearer_token_sources() -> None:
    from api.auth.middleware import bearer_token

    http = {"type": "http", "headers": [(b"authorization", b"Bearer abc.def.ghi")]}
    assert bearer_token(http) == "abc.def.ghi"  # type: ignore[arg-type]
    basic = {"type": "http", "headers": [(b"authorization", b"Basic dXNlcjpwdw==")]}
    assert bearer_token(basic) is None  # type: ignore[arg-type]
    # Browsers cannot set headers on a WebSocket handshake: the query string carries it...
    ws = {"type": "websocket", "headers": [], "query_string": b"since=1-0&access_token=t0k"}
    assert bearer_token(ws) == "t0k"  # type: ignore[arg-type]
    # ...but never for plain HTTP, where it would leak into logs and caches.
    leak = {"type": "http", "headers": [], "query_string": b"access_token=t0k"}
    assert bearer_token(leak) is None  # type: ignore[arg-type]
