"""The built-in dev OIDC issuer: a signing key, its JWKS, dev tokens and client credentials.

On only when ``TB_AUTH_DEV_ISSUER_ENABLED`` and ``TB_ENV`` is not ``prod``
(``core.settings`` refuses that combination, and ``create_app`` checks again).

The signing key (RSA 2048, RS256: Keycloak's default, and the cheapest of the allowed
algorithms to verify - about 32 us against 141 us for Ed25519 on our 2-core box, and a
new buyer's first request pays one check; see docs/decisions/0803-lean-hold-path.md) is
shared by every API replica: the first instance stores it in Redis (``SET NX``) and the
others read it back, so a token issued by one replica verifies on all. If Redis is
unreachable at startup the key falls back to ``.tb/dev-issuer-key-rs256.json``
(git-ignored), which still covers several instances on one machine.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import jwt
import msgspec
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, generate_private_key
from jwt.algorithms import RSAAlgorithm
from litestar import Request, get, post
from litestar.enums import RequestEncodingType
from litestar.handlers import HTTPRouteHandler
from litestar.params import Body, JSONBody
from redis.asyncio import RedisCluster

from api.auth.principal import CLIENT_PREFIX, ROLES
from core.errors import InvalidInput, Unauthorized
from core.settings import AuthSettings

log = logging.getLogger("ticketbuster.api.auth")

# Named after the algorithm: a store that still holds an older key type is not misread.
REDIS_KEY = "tb:auth:dev-issuer:signing-key:rs256"
STATE_FILE = Path(".tb") / "dev-issuer-key-rs256.json"
ALGORITHM = "RS256"
RSA_BITS = 2048
TOKEN_TYPE = "Bearer"  # noqa: S105 - the OAuth2 token type, not a secret


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _thumbprint(public_jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint, used as the kid."""
    members = {"RSA": ("e", "kty", "n"), "OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y")}
    canonical = json.dumps(
        {k: public_jwk[k] for k in members[public_jwk["kty"]]},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode()).digest())[:22]


class DevClient(msgspec.Struct, frozen=True):
    client_id: str
    secret: str  # plain, or "sha256:<hex>"
    scopes: frozenset[str]

    def check_secret(self, given: str) -> bool:
        if self.secret.startswith("sha256:"):
            digest = hashlib.sha256(given.encode()).hexdigest()
            return hmac.compare_digest(digest, self.secret[7:])
        return hmac.compare_digest(given.encode(), self.secret.encode())


def parse_clients(spec: str) -> dict[str, DevClient]:
    """``"id=secret scope scope;id2=secret2"`` -> clients by id."""
    clients: dict[str, DevClient] = {}
    for entry in filter(None, (e.strip() for e in spec.split(";"))):
        client_id, sep, rest = entry.partition("=")
        parts = rest.split()
        if not sep or not client_id.strip() or not parts:
            raise ValueError("TB_AUTH_CLIENTS: expected 'id=secret scope ...;...'")
        clients[client_id.strip()] = DevClient(client_id.strip(), parts[0], frozenset(parts[1:]))
    return clients


class DevIssuer:
    """Signs tokens with the shared dev key; serves the matching JWKS."""

    def __init__(self, settings: AuthSettings, private_jwk: dict[str, Any]) -> None:
        self.settings = settings
        self.issuer = settings.issuer
        self.audience = settings.audience
        self.clients = parse_clients(settings.clients)
        self._set_key(private_jwk)

    def _set_key(self, private_jwk: dict[str, Any]) -> None:
        key = RSAAlgorithm.from_jwk(json.dumps(private_jwk))
        if not isinstance(key, RSAPrivateKey) or key.key_size < RSA_BITS:
            raise ValueError(f"dev issuer key is not an RSA private key of {RSA_BITS}+ bits")
        self._private_key = key
        public = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        self.kid = _thumbprint(public)
        self.public_jwk = {**public, "kid": self.kid, "use": "sig", "alg": ALGORITHM}

    @classmethod
    async def create(cls, settings: AuthSettings, redis: RedisCluster | None) -> DevIssuer:
        return cls(settings, await load_or_create_key(redis))

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk]}

    def issue(
        self,
        sub: str,
        *,
        roles: list[str] | None = None,
        scopes: list[str] | None = None,
        ttl_s: int | None = None,
        org: str | None = None,
    ) -> tuple[str, int]:
        """A signed access token and its lifetime in seconds."""
        ttl = ttl_s or self.settings.dev_token_ttl_s
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": uuid.uuid4().hex,
        }
        if roles is not None:
            claims["roles"] = roles
        if scopes:
            claims["scope"] = " ".join(sorted(scopes))
        if org is not None:
            claims[self.settings.org_claim] = org
        token = jwt.encode(
            claims, self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid}
        )
        return token, ttl

    def openid_configuration(self) -> dict[str, Any]:
        parts = urlsplit(self.issuer)
        origin = f"{parts.scheme}://{parts.netloc}"
        return {
            "issuer": self.issuer,
            "jwks_uri": self.issuer.rstrip("/") + "/jwks.json",
            "token_endpoint": origin + "/api/v1/auth/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": [ALGORITHM],
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "scopes_supported": sorted({s for c in self.clients.values() for s in c.scopes}),
        }


def new_private_jwk() -> dict[str, Any]:
    key = generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key, as_dict=True)
    return jwk


async def load_or_create_key(redis: RedisCluster | None) -> dict[str, Any]:
    """The shared dev signing key: Redis first (``SET NX``), else a git-ignored file.

    A new key is made only when none is stored (an RSA key takes ~50-100 ms to make, and
    the JWKS refresh of every replica reads the shared key through here)."""
    if redis is not None:
        try:
            stored = await redis.get(REDIS_KEY)
            if not stored:
                await redis.set(REDIS_KEY, json.dumps(new_private_jwk()), nx=True)
                stored = await redis.get(REDIS_KEY)
            if stored:
                data: dict[str, Any] = json.loads(stored)
                return data
        except Exception as exc:
            log.warning("dev issuer: Redis unavailable (%s); using %s", exc, STATE_FILE)
    if STATE_FILE.exists():
        loaded: dict[str, Any] = json.loads(STATE_FILE.read_text())
        return loaded
    candidate = new_private_jwk()
    STATE_FILE.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(STATE_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raced: dict[str, Any] = json.loads(STATE_FILE.read_text())
        return raced
    with os.fdopen(fd, "w") as fh:
        json.dump(candidate, fh)
    return candidate


# --- HTTP --------------------------------------------------------------------


class DevTokenRequest(msgspec.Struct, forbid_unknown_fields=True):
    """A dev login: any subject, any of the known roles; ``org`` is the organization an
    organizer acts for (required with the role organizer)."""

    sub: Annotated[str, msgspec.Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.@:-]+$")]
    roles: list[str] = msgspec.field(default_factory=lambda: ["buyer"])
    org: Annotated[str, msgspec.Meta(max_length=64, pattern=r"^[a-z0-9]+(-[a-z0-9]+)*$")] | None = (
        None
    )


class TokenResponse(msgspec.Struct):
    access_token: str
    token_type: str
    expires_in: int
    scope: str | None = None


class OpenIdConfiguration(msgspec.Struct):
    issuer: str
    jwks_uri: str
    token_endpoint: str
    grant_types_supported: list[str]
    token_endpoint_auth_methods_supported: list[str]
    id_token_signing_alg_values_supported: list[str]
    response_types_supported: list[str]
    subject_types_supported: list[str]
    scopes_supported: list[str]


class Jwk(msgspec.Struct, omit_defaults=True):
    kty: str
    kid: str
    use: str
    alg: str
    crv: str | None = None
    x: str | None = None
    y: str | None = None
    n: str | None = None
    e: str | None = None


class JwkSet(msgspec.Struct):
    keys: list[Jwk]


def _issuer(request: Request[Any, Any, Any]) -> DevIssuer:
    issuer: DevIssuer = request.app.state.dev_issuer
    return issuer


@post("/api/v1/auth/dev-token", tags=["auth"], status_code=200, summary="Dev login (dev only)")
async def dev_token(
    request: Request[Any, Any, Any], data: JSONBody[DevTokenRequest]
) -> TokenResponse:
    """Issue a token for any subject and roles. Exists only with the dev issuer on."""
    unknown = [r for r in data.roles if r not in ROLES]
    if unknown:
        raise InvalidInput(f"Unknown role(s) {unknown}; choose from {list(ROLES)}.", field="roles")
    if data.sub.startswith(CLIENT_PREFIX):
        raise InvalidInput("Subjects starting with 'client:' are reserved.", field="sub")
    if "organizer" in data.roles and data.org is None:
        raise InvalidInput("The role organizer needs an organization (org).", field="org")
    token, ttl = _issuer(request).issue(
        data.sub, roles=sorted(set(data.roles)) or ["buyer"], org=data.org
    )
    return TokenResponse(access_token=token, token_type=TOKEN_TYPE, expires_in=ttl)


class ClientCredentialsForm(msgspec.Struct):
    grant_type: str = ""
    scope: str = ""
    client_id: str = ""
    client_secret: str = ""


def _basic_credentials(request: Request[Any, Any, Any]) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except ValueError:
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


@post("/api/v1/auth/token", tags=["auth"], status_code=200, summary="OAuth2 client credentials")
async def client_credentials_token(
    request: Request[Any, Any, Any],
    data: Annotated[ClientCredentialsForm, Body(media_type=RequestEncodingType.URL_ENCODED)],
) -> TokenResponse:
    """RFC 6749 §4.4 for partner systems: ``grant_type=client_credentials`` plus HTTP Basic
    (or ``client_id``/``client_secret`` in the form). The token's ``sub`` is ``client:<id>``."""
    if data.grant_type != "client_credentials":
        raise InvalidInput(
            "Only grant_type=client_credentials is supported.",
            field="grant_type",
            error="unsupported_grant_type",
        )
    issuer = _issuer(request)
    creds = _basic_credentials(request) or (data.client_id, data.client_secret)
    client = issuer.clients.get(creds[0])
    if client is None or not client.check_secret(creds[1]):
        raise Unauthorized("Unknown client or wrong secret.", error="invalid_client")
    requested = set(data.scope.split()) if data.scope else set(client.scopes)
    if not requested <= client.scopes:
        raise InvalidInput(
            f"Scopes not granted to this client: {sorted(requested - client.scopes)}.",
            field="scope",
            error="invalid_scope",
        )
    token, ttl = issuer.issue(CLIENT_PREFIX + client.client_id, roles=[], scopes=sorted(requested))
    return TokenResponse(
        access_token=token, token_type=TOKEN_TYPE, expires_in=ttl, scope=" ".join(sorted(requested))
    )


def create_dev_issuer_handlers(settings: AuthSettings) -> list[HTTPRouteHandler]:
    """Route handlers of the dev issuer; discovery lives under the issuer's own path too."""
    issuer_path = urlsplit(settings.issuer).path.rstrip("/")
    config_paths = ["/.well-known/openid-configuration"]
    jwks_paths = ["/.well-known/jwks.json"]
    if issuer_path:
        config_paths.append(issuer_path + "/.well-known/openid-configuration")
        jwks_paths.append(issuer_path + "/jwks.json")

    @get(config_paths, tags=["auth"], summary="OIDC discovery (dev issuer)", cache=False)
    async def openid_configuration(request: Request[Any, Any, Any]) -> OpenIdConfiguration:
        return msgspec.convert(_issuer(request).openid_configuration(), OpenIdConfiguration)

    @get(jwks_paths, tags=["auth"], summary="JWKS of the dev issuer")
    async def jwks(request: Request[Any, Any, Any]) -> JwkSet:
        return msgspec.convert(_issuer(request).jwks(), JwkSet)

    return [dev_token, client_credentials_token, openid_configuration, jwks]
