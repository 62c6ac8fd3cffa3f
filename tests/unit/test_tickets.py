"""Ticket tokens: what a gate scanner admits and what it refuses."""

from __future__ import annotations

import base64
import json

import jwt
import msgspec
import pytest

from core.tickets import (
    InvalidTicket,
    TicketClaims,
    generate_private_key_pem,
    jwks,
    sign_ticket,
    signing_key,
    verify_ticket,
)

CLAIMS = TicketClaims(
    ticket="0b0e7c1e-8a55-5b0c-9d2a-2f7f1a9d4c11",
    event=42,
    seat="101-C-14",
    holder="user-1",
    order="f6a8d3c2-1111-4c4c-8888-0123456789ab",
    iat=1_700_000_000,
)


@pytest.fixture(scope="module")
def pem() -> bytes:
    return generate_private_key_pem()


def test_signed_ticket_verifies_offline_with_the_jwks(pem: bytes) -> None:
    key = signing_key(pem)
    token = sign_ticket(CLAIMS, key)
    published = msgspec.json.decode(msgspec.json.encode(jwks([pem])))  # what a scanner downloads
    assert verify_ticket(token, published) == CLAIMS
    assert jwt.get_unverified_header(token)["kid"] == key.kid
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"


def test_jwks_has_no_private_material_and_dedupes(pem: bytes) -> None:
    other = generate_private_key_pem()
    keys = msgspec.to_builtins(jwks([pem, pem, other]))["keys"]
    assert len(keys) == 2
    assert all(set(k) == {"kty", "crv", "x", "kid", "alg", "use"} for k in keys)


def test_token_signed_by_an_unknown_key_is_refused(pem: bytes) -> None:
    forged = sign_ticket(CLAIMS, signing_key(generate_private_key_pem()))
    with pytest.raises(InvalidTicket):
        verify_ticket(forged, jwks([pem]))


def test_forged_kid_with_another_key_is_refused(pem: bytes) -> None:
    real = signing_key(pem)
    attacker = generate_private_key_pem()
    forged = sign_ticket(CLAIMS, signing_key(attacker).__class__(kid=real.kid, pem=attacker))
    with pytest.raises(InvalidTicket):
        verify_ticket(forged, jwks([pem]))


def test_tampered_claims_are_refused(pem: bytes) -> None:
    token = sign_ticket(CLAIMS, signing_key(pem))
    header, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["seat"] = "101-A-1"
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(InvalidTicket):
        verify_ticket(f"{header}.{forged_payload}.{sig}", jwks([pem]))


@pytest.mark.parametrize("token", ["", "not-a-token", "a.b.c", "e30.e30."])
def test_malformed_tokens_are_refused(pem: bytes, token: str) -> None:
    with pytest.raises(InvalidTicket):
        verify_ticket(token, jwks([pem]))


def test_unsigned_alg_none_is_refused(pem: bytes) -> None:
    token = jwt.encode(msgspec.to_builtins(CLAIMS), key=None, algorithm="none")
    with pytest.raises(InvalidTicket):
        verify_ticket(token, jwks([pem]))


def test_hs256_with_public_key_as_secret_is_refused(pem: bytes) -> None:
    key_set = jwks([pem])
    secret = key_set.keys[0].x.encode()
    token = jwt.encode(
        msgspec.to_builtins(CLAIMS), secret, algorithm="HS256", headers={"kid": key_set.keys[0].kid}
    )
    with pytest.raises(InvalidTicket):
        verify_ticket(token, key_set)
