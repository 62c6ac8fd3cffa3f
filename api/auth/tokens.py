"""Bearer JWT validation against the issuer's JWKS (compact JWS, checked with cryptography).

Issuer, audience and the algorithm allow-list are checked exactly; ``alg:
none`` and HMAC algorithms can never be allowed (a public JWKS key must not
double as an HMAC secret). Keys are cached; an unknown ``kid`` triggers a
refresh, at most once per ``min_refresh_interval_s`` so a flood of made-up kids
cannot hammer the issuer.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt
import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from api.auth.principal import CLIENT_PREFIX, DEFAULT_ROLE, ROLES, Principal
from core.errors import Unauthorized
from core.settings import AuthSettings

log = logging.getLogger("ticketbuster.api.auth")

# Algorithms a JWKS-verified token may use. Never "none", never HS*.
ASYMMETRIC_ALGORITHMS = frozenset(
    {"EdDSA", "ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
LEEWAY_S = 30

JwksFetcher = Callable[[], Awaitable[dict[str, Any]]]


def allowed_algorithms(settings: AuthSettings) -> list[str]:
    """The configured allow-list, refusing anything that is not an asymmetric signature."""
    algs = [a.strip() for a in settings.algorithms.split(",") if a.strip()]
    bad = [a for a in algs if a not in ASYMMETRIC_ALGORITHMS]
    if bad or not algs:
        raise ValueError(
            f"TB_AUTH_ALGORITHMS: {bad or 'empty'} not allowed; "
            f"choose from {sorted(ASYMMETRIC_ALGORITHMS)}"
        )
    return algs


class JwksCache:
    """kid -> key, refreshed every ``max_age_s`` and on an unknown kid (rate-limited)."""

    def __init__(
        self,
        fetch: JwksFetcher,
        *,
        max_age_s: float = 600.0,
        min_refresh_interval_s: float = 10.0,
    ) -> None:
        self._fetch = fetch
        self._keys: dict[str, jwt.PyJWK] = {}
        self._algs: dict[str, str] = {}
        self._fetched_at = 0.0
        self._last_attempt = float("-inf")
        self._max_age_s = max_age_s
        self._min_refresh_interval_s = min_refresh_interval_s
        self._lock = asyncio.Lock()

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    async def refresh(self, *, force: bool = False) -> None:
        async with self._lock:
            now = time.monotonic()
            if not force and now - self._last_attempt < self._min_refresh_interval_s:
                return
            self._last_attempt = now
            try:
                data = await self._fetch()
            except Exception as exc:  # the old keys stay usable while the issuer is away
                log.warning("JWKS refresh failed: %s: %s", type(exc).__name__, exc)
                return
            keys: dict[str, jwt.PyJWK] = {}
            algs: dict[str, str] = {}
            for raw in data.get("keys", []):
                if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                    continue
                try:
                    key = jwt.PyJWK.from_dict(raw)
                except jwt.PyJWTError as exc:
                    log.warning("skipping JWKS key %s: %s", raw.get("kid"), exc)
                    continue
                kid = str(raw.get("kid", ""))
                keys[kid] = key
                if isinstance(raw.get("alg"), str):
                    algs[kid] = raw["alg"]
            if not keys and self._keys:
                # An empty or broken answer is an issuer fault, not a revocation of every key.
                log.warning("JWKS refresh returned no usable key; keeping the cached keys")
                return
            self._keys, self._algs = keys, algs
            self._fetched_at = time.monotonic()

    async def get(self, kid: str | None) -> jwt.PyJWK | None:
        if time.monotonic() - self._fetched_at > self._max_age_s:
            await self.refresh()
        key = self._lookup(kid)
        if key is None:
            await self.refresh()  # an unknown kid may be a rotated key
            key = self._lookup(kid)
        return key

    def declared_alg(self, kid: str | None) -> str | None:
        """The ``alg`` the key's JWK declares, if it does."""
        if kid is None:
            return next(iter(self._algs.values())) if len(self._keys) == 1 and self._algs else None
        return self._algs.get(kid)

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is None:
            # Without a kid only a single-key set is unambiguous.
            return next(iter(self._keys.values())) if len(self._keys) == 1 else None
        return self._keys.get(kid)


def http_jwks_fetcher(settings: AuthSettings, client: httpx.AsyncClient) -> JwksFetcher:
    """Fetch the JWKS from ``jwks_url``, or discover it from the issuer's OIDC configuration."""
    jwks_url = settings.jwks_url

    async def fetch() -> dict[str, Any]:
        nonlocal jwks_url
        if not jwks_url:
            discovery = settings.issuer.rstrip("/") + "/.well-known/openid-configuration"
            resp = await client.get(discovery)
            resp.raise_for_status()
            config = msgspec.json.decode(resp.content)
            if config.get("issuer") != settings.issuer:
                raise ValueError("OIDC discovery answered for another issuer")
            jwks_url = str(config["jwks_uri"])
        resp = await client.get(jwks_url)
        resp.raise_for_status()
        data = msgspec.json.decode(resp.content)
        if not isinstance(data, dict):
            raise ValueError("JWKS is not an object")
        return data

    return fetch


def _scopes(claims: dict[str, Any]) -> set[str]:
    """``scope`` (space-separated, RFC 8693/9068) or ``scp`` (a list, or a string as some
    providers send it)."""
    scope = claims.get("scope")
    if scope is None:
        scope = claims.get("scp", [])
    if isinstance(scope, str):
        return set(scope.split())
    if isinstance(scope, list):
        return {s for s in scope if isinstance(s, str)}
    return set()


def partner_client_of(claims: dict[str, Any], partner_clients: frozenset[str]) -> str | None:
    """The partner a provider's token speaks for: its ``client_id`` (RFC 9068), else its
    ``azp`` (OIDC; Keycloak), when that client is a registered partner."""
    for name in ("client_id", "azp"):
        client = claims.get(name)
        if isinstance(client, str) and client:
            return client if client in partner_clients else None
    return None


def principal_from_claims(
    claims: dict[str, Any],
    partner_clients: frozenset[str] = frozenset(),
    org_claim: str = "org",
) -> Principal:
    """Roles from ``roles`` (dev issuer) or ``realm_access.roles`` (Keycloak); scopes from
    ``scope`` or ``scp``; the organization from ``org_claim`` (a string, or a one-element
    list as Keycloak maps attributes). A token of a partner client (the dev issuer's ``client:<id>``
    subject, or a provider's token whose client is in ``partner_clients``) is that
    partner, with scopes and no roles: a service account's default realm roles never
    make a partner a buyer or an admin."""
    sub = str(claims["sub"])
    scopes = frozenset(_scopes(claims))
    client = None if sub.startswith(CLIENT_PREFIX) else partner_client_of(claims, partner_clients)
    if client is not None:
        return Principal(sub=CLIENT_PREFIX + client, scopes=scopes)
    if sub.startswith(CLIENT_PREFIX):
        return Principal(sub=sub, scopes=scopes)
    raw_roles = claims.get("roles")
    if raw_roles is None:
        raw_roles = (claims.get("realm_access") or {}).get("roles", [])
    roles = {r for r in raw_roles if isinstance(r, str) and r in ROLES}
    if not roles:
        roles = {DEFAULT_ROLE}
    org = claims.get(org_claim)
    if isinstance(org, list) and len(org) == 1:
        org = org[0]
    return Principal(
        sub=sub,
        roles=frozenset(roles),
        scopes=scopes,
        org=org if isinstance(org, str) and org else None,
    )


class TokenVerifier:
    """Turns a bearer token into a ``Principal`` or raises ``Unauthorized`` saying why.

    The compact JWS is parsed with msgspec and its signature checked with
    ``cryptography`` directly (``verify_jws``): the same rules as a full JWT library
    (algorithm allow-list, the key's type matching the algorithm, exact issuer, our
    audience, ``exp``/``nbf``/``iat`` with leeway, a subject), at a fraction of the cost,
    since a flash sale verifies a new buyer's token on every first request.
    """

    def __init__(self, settings: AuthSettings, keys: JwksCache, cache_size: int = 4096) -> None:
        self.issuer = settings.issuer
        self.audience = settings.audience
        self.algorithms = frozenset(allowed_algorithms(settings))
        self.keys = keys
        self.partner_clients = settings.partner_client_ids()
        self.org_claim = settings.org_claim
        # A buyer sends the same token with every request of a sale; a signature check costs
        # ~0.15 ms, so verified tokens are remembered (until they expire) in a small LRU.
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._cache_size = cache_size

    async def verify(self, token: str) -> Principal:
        cached = self._verified.get(token)
        if cached is not None:
            principal, expires_at = cached
            if time.time() < expires_at:
                self._verified.move_to_end(token)
                return principal
            del self._verified[token]
        principal, exp = await self._verify(token)
        if self._cache_size > 0:
            self._verified[token] = (principal, exp)
            if len(self._verified) > self._cache_size:
                self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> tuple[Principal, float]:
        jws = parse_jws(token)
        if jws.alg not in self.algorithms:
            raise Unauthorized(f"The token's algorithm {jws.alg!r} is not accepted.")
        key = await self.keys.get(jws.kid)
        if key is None:
            raise Unauthorized("The token was signed by an unknown key.")
        verify_jws(jws, key, self.keys.declared_alg(jws.kid))
        claims = jws.claims()
        check_claims(claims, issuer=self.issuer, audience=self.audience, now=time.time())
        principal = principal_from_claims(claims, self.partner_clients, self.org_claim)
        return principal, float(claims["exp"])


# -- compact JWS, verified with cryptography ---------------------------------------------

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "256": hashes.SHA256,
    "384": hashes.SHA384,
    "512": hashes.SHA512,
}
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_B64URL = bytes.maketrans(b"-_", b"+/")


def _b64url(segment: bytes) -> bytes:
    """Strict base64url (no padding in the token; any stray character is refused)."""
    if b"+" in segment or b"/" in segment or b"=" in segment:
        raise ValueError("not base64url")
    padded = segment.translate(_B64URL) + b"=" * (-len(segment) % 4)
    return binascii.a2b_base64(padded, strict_mode=True)


class Jws(msgspec.Struct, frozen=True):
    """A compact JWS split into its parts (nothing verified yet)."""

    alg: str
    kid: str | None
    signing_input: bytes
    payload: bytes
    signature: bytes

    def claims(self) -> dict[str, Any]:
        try:
            claims = msgspec.json.decode(self.payload)
        except msgspec.DecodeError:
            raise Unauthorized("The token is invalid: its claims are not JSON.") from None
        if not isinstance(claims, dict):
            raise Unauthorized("The token is invalid: its claims are not an object.")
        return claims


def parse_jws(token: str) -> Jws:
    """Split and decode a compact JWS; Unauthorized("malformed") when it is not one."""
    try:
        raw = token.encode("ascii")
        head, payload, signature = raw.split(b".")
        header = msgspec.json.decode(_b64url(head))
        body = _b64url(payload)
        sig = _b64url(signature)
    except (ValueError, UnicodeError, binascii.Error, msgspec.DecodeError):
        raise Unauthorized("The bearer token is malformed.") from None
    if not isinstance(header, dict):
        raise Unauthorized("The bearer token is malformed.")
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
        raise Unauthorized(f"The token's algorithm {alg!r} is not accepted.")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise Unauthorized("The token's key id is malformed.")
    if "crit" in header:  # no extension is understood, so none may be required
        raise Unauthorized("The token is invalid: it requires unsupported extensions.")
    return Jws(alg, kid, head + b"." + payload, body, sig)


def verify_jws(jws: Jws, jwk: jwt.PyJWK, declared_alg: str | None = None) -> None:
    """Check the signature with the key; the key's type (and the ``alg`` its JWK declares,
    if any) must match the token's algorithm."""
    alg, key, sig, data = jws.alg, jwk.key, jws.signature, jws.signing_input
    if declared_alg and declared_alg != alg:
        raise Unauthorized("The token's algorithm does not match its key.")
    try:
        if alg == "EdDSA":
            if not isinstance(key, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
                raise Unauthorized("The token's algorithm does not match its key.")
            key.verify(sig, data)
        elif alg.startswith("ES"):
            if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != _EC_CURVES[alg]:
                raise Unauthorized("The token's algorithm does not match its key.")
            half = (key.curve.key_size + 7) // 8
            if len(sig) != 2 * half:
                raise InvalidSignature
            der = encode_dss_signature(
                int.from_bytes(sig[:half], "big"), int.from_bytes(sig[half:], "big")
            )
            key.verify(der, data, ec.ECDSA(_HASHES[alg[2:]]()))
        else:
            if not isinstance(key, rsa.RSAPublicKey):
                raise Unauthorized("The token's algorithm does not match its key.")
            digest = _HASHES[alg[2:]]()
            pad: padding.AsymmetricPadding = (
                padding.PKCS1v15()
                if alg.startswith("RS")
                else padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
            )
            key.verify(sig, data, pad, digest)
    except InvalidSignature:
        raise Unauthorized("The token's signature does not verify.") from None


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Unauthorized(f"The token is invalid: claim {name!r} is missing or not a number.")
    return float(value)


def check_claims(claims: dict[str, Any], *, issuer: str, audience: str, now: float) -> None:
    """The registered claims of a verified token (RFC 7519), with ``LEEWAY_S``.

    ``aud`` may be a list (as OIDC providers send when a token serves several APIs): it
    must contain our audience.
    """
    exp = _number(claims, "exp")
    _number(claims, "iat")
    if now > exp + LEEWAY_S:
        raise Unauthorized("The token has expired.")
    if "nbf" in claims and now + LEEWAY_S < _number(claims, "nbf"):
        raise Unauthorized("The token is invalid: it is not valid yet.")
    if claims.get("iss") != issuer:
        raise Unauthorized("The token was issued by an issuer this API does not trust.")
    aud = claims.get("aud")
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise Unauthorized("The token is meant for another audience.")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        raise Unauthorized("The token is invalid: it has no subject.")
