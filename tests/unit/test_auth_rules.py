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
from api.ratelimit import client_ip
from api.startup import parse_trusted_proxies
from core.settings import AuthSettings


def test_roles_default_to_buyer_and_unknown_roles_are_dropped() -> None:
    p = principal_from_claims({"sub": "alice", "roles": ["superuser"]})
    assert p.roles == frozenset({"buyer"})
    p = principal_from_claims({"sub": "bob", "realm_access": {"roles": ["admin", "offline"]}})
    assert p.roles == frozenset({"admin"})


def test_partner_clients_get_scopes_and_no_roles() -> None:
    p = principal_from_claims({"sub": "client:acme", "scope": "holds orders", "roles": ["admin"]})
    assert p.is_client
    assert p.roles == frozenset()
    assert p.has_scope("holds") and p.has_scope("orders") and not p.has_scope("admin")


# A Keycloak client-credentials token: the subject is the client's service-account user,
# the client is in azp (and client_id from Keycloak 26 on), default realm roles included.
KEYCLOAK_SERVICE_ACCOUNT = {
    "sub": "0f5b6d1e-9a43-4c1b-8f7e-1f0b5b2a9c11",
    "azp": "acme",
    "client_id": "acme",
    "preferred_username": "service-account-acme",
    "scope": "profile email holds orders",
    "realm_access": {"roles": ["default-roles-ticketbuster", "offline_access", "buyer"]},
}


def test_a_registered_partner_client_of_the_provider_is_that_partner() -> None:
    p = principal_from_claims(KEYCLOAK_SERVICE_ACCOUNT, frozenset({"acme"}))
    assert p.sub == "client:acme" and p.is_client
    assert p.roles == frozenset()  # the default "buyer" realm role does not make it a buyer
    assert p.has_scope("holds") and p.has_scope("orders")
    # azp only (older Keycloak), scopes as an scp list (other providers).
    claims = {k: v for k, v in KEYCLOAK_SERVICE_ACCOUNT.items() if k not in ("client_id", "scope")}
    p = principal_from_claims({**claims, "scp": ["holds"]}, frozenset({"acme"}))
    assert p.sub == "client:acme" and p.scopes == frozenset({"holds"})
    # scp as a space-separated string.
    p = principal_from_claims({**claims, "scp": "holds orders"}, frozenset({"acme"}))
    assert p.scopes == frozenset({"holds", "orders"})


def test_a_token_of_another_client_is_a_person() -> None:
    # Not a registered partner (e.g. the PWA's own client): the user, with their roles.
    person = {
        **KEYCLOAK_SERVICE_ACCOUNT,
        "azp": "ticketbuster-pwa",
        "client_id": "ticketbuster-pwa",
    }
    p = principal_from_claims(person, frozenset({"acme"}))
    assert p.sub == person["sub"] and not p.is_client and p.roles == frozenset({"buyer"})
    # Without a configured partner list nobody is a partner by claims alone.
    assert not principal_from_claims(KEYCLOAK_SERVICE_ACCOUNT).is_client
    # client_id wins over azp: a partner's azp on another client's token is not enough.
    mixed = {**KEYCLOAK_SERVICE_ACCOUNT, "client_id": "someone-else"}
    assert not principal_from_claims(mixed, frozenset({"acme"})).is_client


def test_partner_client_ids_setting() -> None:
    assert AuthSettings(partner_clients=" acme, beta ,,").partner_client_ids() == {"acme", "beta"}


@pytest.mark.parametrize("algs", ["none", "HS256", "EdDSA,none", ""])
def test_algorithm_allow_list_refuses_none_and_hmac(algs: str) -> None:
    with pytest.raises(ValueError, match="TB_AUTH_ALGORITHMS"):
        allowed_algorithms(AuthSettings(algorithms=algs))


def test_clients_spec() -> None:
    clients = parse_clients("acme=s3cret holds orders; beta=sha256:" + "0" * 64)
    assert clients["acme"].scopes == frozenset({"holds", "orders"})
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
    from api.auth.principal import bearer_token

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


# -- the compact-JWS verifier (signature, key type, registered claims) --------------------

_NOW = 1_900_000_000


def _claims(**over: Any) -> dict[str, Any]:
    base = {"sub": "alice", "iss": "https://issuer.test/", "aud": "ticketbuster",
            "iat": _NOW, "exp": _NOW + 600}  # fmt: skip
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def _verifier_for(jwks: list[dict[str, Any]], algorithms: str = "EdDSA,ES256,RS256,PS256") -> Any:
    from api.auth.tokens import TokenVerifier

    async def fetch() -> dict[str, Any]:
        return {"keys": jwks}

    settings = AuthSettings(
        issuer="https://issuer.test/", audience="ticketbuster", algorithms=algorithms
    )
    return TokenVerifier(settings, JwksCache(fetch), cache_size=0)


def _keypair(alg: str) -> tuple[Any, dict[str, Any]]:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if alg == "EdDSA":
        private: Any = Ed25519PrivateKey.generate()
    elif alg == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    else:
        private = rsa.generate_private_key(65537, 2048)
    public = jwt.PyJWK.from_dict(
        {**jwt.get_algorithm_by_name(alg).to_jwk(private.public_key(), as_dict=True), "kid": alg}
    )
    return private, {**public._jwk_data, "use": "sig"}


@pytest.mark.parametrize("alg", ["EdDSA", "ES256", "RS256", "PS256"])
async def test_each_allowed_algorithm_verifies_and_a_flipped_bit_does_not(
    alg: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.errors import Unauthorized

    monkeypatch.setattr("time.time", lambda: _NOW + 10)
    private, jwk = _keypair(alg)
    verifier = _verifier_for([jwk])
    token = jwt.encode(_claims(), private, algorithm=alg, headers={"kid": alg})
    assert (await verifier.verify(token)).sub == "alice"
    head, _payload, sig = token.split(".")
    forged = jwt.utils.base64url_encode(msgspec.json.encode(_claims(sub="mallory"))).decode()
    with pytest.raises(Unauthorized, match="signature"):
        await verifier.verify(f"{head}.{forged}.{sig}")


async def test_a_key_of_another_type_than_the_algorithm_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from core.errors import Unauthorized

    monkeypatch.setattr("time.time", lambda: _NOW + 10)
    _, ed_jwk = _keypair("EdDSA")
    rsa_private, _ = _keypair("RS256")
    # An RS256 token that names the Ed25519 key's kid: never verified with the wrong key type.
    token = jwt.encode(_claims(), rsa_private, algorithm="RS256", headers={"kid": "EdDSA"})
    with pytest.raises(Unauthorized, match="does not match"):
        await _verifier_for([ed_jwk]).verify(token)


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"exp": _NOW - 100}, "expired"),
        ({"nbf": _NOW + 3600}, "not valid yet"),
        ({"iat": None}, "iat"),
        ({"exp": "tomorrow"}, "exp"),
        ({"aud": ["someone", "else"]}, "audience"),
        ({"aud": None}, "audience"),
        ({"iss": None}, "issuer"),
        ({"sub": ""}, "subject"),
    ],
)
async def test_registered_claims_are_enforced(
    over: dict[str, Any], reason: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.errors import Unauthorized

    monkeypatch.setattr("time.time", lambda: _NOW + 10)
    private, jwk = _keypair("EdDSA")
    token = jwt.encode(_claims(**over), private, algorithm="EdDSA", headers={"kid": "EdDSA"})
    with pytest.raises(Unauthorized, match=reason):
        await _verifier_for([jwk]).verify(token)


async def test_an_audience_list_that_names_us_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("time.time", lambda: _NOW + 10)
    private, jwk = _keypair("EdDSA")
    token = jwt.encode(
        _claims(aud=["account", "ticketbuster"]), private, algorithm="EdDSA",
        headers={"kid": "EdDSA"},
    )  # fmt: skip
    assert (await _verifier_for([jwk]).verify(token)).sub == "alice"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + "=",  # padding
        lambda t: t.replace(".", "..", 1),  # an empty segment
        lambda t: t[:-2] + "!!",  # outside the alphabet
        lambda t: t.rsplit(".", 1)[0],  # two segments
        lambda t: "é" + t,  # not ASCII
    ],
)
async def test_malformed_compact_forms_are_refused(
    mangle: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.errors import Unauthorized

    monkeypatch.setattr("time.time", lambda: _NOW + 10)
    private, jwk = _keypair("EdDSA")
    token = jwt.encode(_claims(), private, algorithm="EdDSA", headers={"kid": "EdDSA"})
    with pytest.raises(Unauthorized):
        await _verifier_for([jwk]).verify(mangle(token))


async def test_a_token_that_requires_an_extension_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from core.errors import Unauthorized

    monkeypatch.setattr("time.time", lambda: _NOW + 10)
    private, jwk = _keypair("EdDSA")
    token = jwt.encode(
        _claims(), private, algorithm="EdDSA", headers={"kid": "EdDSA", "crit": ["exp"]}
    )
    with pytest.raises(Unauthorized, match="extensions"):
        await _verifier_for([jwk]).verify(token)


async def test_a_refresh_with_no_usable_key_keeps_the_cached_keys() -> None:
    answer: dict[str, Any] = {"keys": [_jwk("k1")]}

    async def fetch() -> dict[str, Any]:
        return answer

    cache = JwksCache(fetch, min_refresh_interval_s=0, max_age_s=0)
    assert await cache.get("k1") is not None
    answer = {"keys": [{"kty": "nonsense"}]}
    assert await cache.get("k1") is not None
