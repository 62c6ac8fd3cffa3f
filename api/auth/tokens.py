"""Bearer JWT validation against the issuer's JWKS.

Issuer, audience and the algorithm allow-list are checked exactly; ``alg:
none`` and HMAC algorithms can never be allowed (a public JWKS key must not
double as an HMAC secret). Keys are cached; an unknown ``kid`` triggers a
refresh, at most once per ``min_refresh_interval_s`` so a flood of made-up kids
cannot hammer the issuer.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import jwt
import msgspec

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
            for raw in data.get("keys", []):
                if not isinstance(raw, dict) or raw.get("use", "sig") != "sig":
                    continue
                try:
                    key = jwt.PyJWK.from_dict(raw)
                except jwt.PyJWTError as exc:
                    log.warning("skipping JWKS key %s: %s", raw.get("kid"), exc)
                    continue
                keys[str(raw.get("kid", ""))] = key
            self._keys = keys
            self._fetched_at = time.monotonic()

    async def get(self, kid: str | None) -> jwt.PyJWK | None:
        if time.monotonic() - self._fetched_at > self._max_age_s:
            await self.refresh()
        key = self._lookup(kid)
        if key is None:
            await self.refresh()  # an unknown kid may be a rotated key
            key = self._lookup(kid)
        return key

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


def principal_from_claims(claims: dict[str, Any]) -> Principal:
    """Roles from ``roles`` (dev issuer) or ``realm_access.roles`` (Keycloak); scopes from
    ``scope`` (space-separated, OAuth2) or ``scp`` (list)."""
    sub = str(claims["sub"])
    raw_roles = claims.get("roles")
    if raw_roles is None:
        raw_roles = (claims.get("realm_access") or {}).get("roles", [])
    roles = {r for r in raw_roles if isinstance(r, str) and r in ROLES}
    scope = claims.get("scope", claims.get("scp", []))
    scopes = (
        set(scope.split()) if isinstance(scope, str) else {s for s in scope if isinstance(s, str)}
    )
    if not roles and not sub.startswith(CLIENT_PREFIX):
        roles = {DEFAULT_ROLE}
    return Principal(sub=sub, roles=frozenset(roles), scopes=frozenset(scopes))


class TokenVerifier:
    """Turns a bearer token into a ``Principal`` or raises ``Unauthorized`` saying why."""

    def __init__(self, settings: AuthSettings, keys: JwksCache, cache_size: int = 4096) -> None:
        self.issuer = settings.issuer
        self.audience = settings.audience
        self.algorithms = allowed_algorithms(settings)
        self.keys = keys
        # A buyer sends the same token with every request of a sale; a signature check costs
        # ~0.4 ms, so verified tokens are remembered (until they expire) in a small LRU.
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
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("The bearer token is malformed.") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise Unauthorized(f"The token's algorithm {alg!r} is not accepted.")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise Unauthorized("The token's key id is malformed.")
        key = await self.keys.get(kid)
        if key is None:
            raise Unauthorized("The token was signed by an unknown key.")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iat", "iss", "aud", "sub"], "strict_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The token has expired.") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(
                "The token was issued by an issuer this API does not trust."
            ) from None
        except jwt.InvalidAudienceError:
            raise Unauthorized("The token is meant for another audience.") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("The token's signature does not verify.") from None
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise Unauthorized(f"The token is invalid: {type(exc).__name__}.") from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise Unauthorized("The token has no subject.")
        return principal_from_claims(claims), float(claims["exp"])
