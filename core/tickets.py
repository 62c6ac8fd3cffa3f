"""Tickets: signed tokens that gate scanners verify offline.

A ticket token is a compact JWS (EdDSA / Ed25519 via pyjwt) whose header names
the signing key (``kid`` = the key's RFC 7638 thumbprint) and whose claims are
``ticket``, ``event``, ``seat``, ``holder``, ``order``, ``iss`` and ``iat``.
Scanners fetch the public keys once as a JWKS (``GET /api/v1/tickets/jwks.json``)
and verify without a network round trip; the check-in endpoint then records the
first admission.

Pure functions only: key material comes in as PEM bytes; reading or creating
key files is the job of the process that holds them (api/ and workers/).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Annotated, Any, Final

import jwt
import msgspec
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from jwt.algorithms import OKPAlgorithm

from core.errors import Conflict, DomainError
from core.gate import GateName

ALGORITHM: Final = "EdDSA"
ISSUER: Final = "ticketbuster"


class InvalidTicket(DomainError):
    """The token is malformed, forged, or signed by a key we do not know."""

    status = 422
    code = "invalid_ticket"
    title = "Invalid ticket"


class AlreadyUsed(Conflict):
    """The ticket was admitted before; ``extra['checked_in_at']`` says when."""

    code = "already_used"
    title = "Ticket already used"


class TicketClaims(msgspec.Struct, frozen=True):
    ticket: str
    event: int
    seat: str
    holder: str
    order: str
    iat: int
    iss: str = ISSUER
    # Bumped by each reissue (core/support.py); only the current generation is admitted.
    # Absent from first-generation tokens.
    gen: int = 0


class CheckinRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A scan at a gate of the scanner session's event (``core.gate``)."""

    token: str
    # The scanner session: the event this gate admits, and the gate's name.
    event_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    gate: GateName
    # When the device scanned it (ms since epoch), for a check-in queued offline.
    scanned_at: Annotated[int, msgspec.Meta(ge=0, le=10**15)] | None = None


class CheckinResult(msgspec.Struct, frozen=True):
    ticket_id: str
    event_id: int
    seat_id: str
    checked_in_at: int  # ms since epoch
    status: str = "admitted"
    gate: str = ""


class Jwk(msgspec.Struct, frozen=True):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str = ALGORITHM
    use: str = "sig"


class Jwks(msgspec.Struct, frozen=True):
    keys: tuple[Jwk, ...]


class SigningKey(msgspec.Struct, frozen=True):
    """A private key ready to sign, with its key id."""

    kid: str
    pem: bytes


def generate_private_key_pem() -> bytes:
    """A fresh Ed25519 private key as PKCS#8 PEM (dev keys; prod keys come from a Secret)."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@functools.lru_cache(maxsize=8)
def _load_private(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("ticket signing key must be an Ed25519 private key")
    return key


def _load_public(pem: bytes) -> Ed25519PublicKey:
    if b"PRIVATE KEY" in pem:
        return _load_private(pem).public_key()
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("ticket verification key must be an Ed25519 public key")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(pem: bytes) -> Jwk:
    """The public JWK of a private or public PEM key; ``kid`` is its RFC 7638 thumbprint."""
    public = _load_public(pem)
    x = _b64(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": x}, separators=(",", ":"))
    kid = _b64(hashlib.sha256(canonical.encode()).digest())
    return Jwk(kty="OKP", crv="Ed25519", x=x, kid=kid)


def signing_key(pem: bytes) -> SigningKey:
    return SigningKey(kid=public_jwk(pem).kid, pem=pem)


def jwks(pems: Iterable[bytes]) -> Jwks:
    """JWKS of the current and previous keys (kept during rotation), without duplicates."""
    seen: dict[str, Jwk] = {}
    for pem in pems:
        jwk = public_jwk(pem)
        seen.setdefault(jwk.kid, jwk)
    return Jwks(keys=tuple(seen.values()))


@functools.lru_cache(maxsize=32)
def _public_from_jwk(x: str) -> Any:
    return OKPAlgorithm.from_jwk(json.dumps({"kty": "OKP", "crv": "Ed25519", "x": x}))


def sign_ticket(claims: TicketClaims, key: SigningKey) -> str:
    """A compact JWS of the claims, with the key id in its header."""
    payload = msgspec.to_builtins(claims)
    if not claims.gen:
        del payload["gen"]
    return jwt.encode(
        payload, _load_private(key.pem), algorithm=ALGORITHM, headers={"kid": key.kid}
    )


def verify_ticket(token: str, keys: Jwks | Mapping[str, Any]) -> TicketClaims:
    """Check signature and shape; raises ``InvalidTicket`` for anything we did not sign."""
    key_set = keys if isinstance(keys, Jwks) else msgspec.convert(keys, Jwks)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError as exc:
        raise InvalidTicket(f"malformed ticket token: {exc}") from None
    kid = header.get("kid")
    if header.get("alg") != ALGORITHM:
        raise InvalidTicket("unexpected signature algorithm")
    match = next((k for k in key_set.keys if k.kid == kid), None)
    if match is None:
        raise InvalidTicket("unknown signing key")
    public = _public_from_jwk(match.x)
    try:
        payload = jwt.decode(
            token,
            public,
            algorithms=[ALGORITHM],
            issuer=ISSUER,
            options={"require": ["ticket", "event", "seat", "holder", "iat", "iss"]},
        )
    except jwt.PyJWTError as exc:
        raise InvalidTicket(f"ticket does not verify: {exc}") from None
    try:
        return msgspec.convert(payload, TicketClaims)
    except msgspec.ValidationError as exc:
        raise InvalidTicket(f"ticket claims are malformed: {exc}") from None
