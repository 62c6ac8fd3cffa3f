"""The ticket signing keys as the API sees them: public keys only, for JWKS and check-in.

The private key file is the issuer's (``TB_TICKETS_SIGNING_KEY_PATH``; in prod a mounted
Secret that only the issuer mounts). The API reads the public halves from
``TB_TICKETS_PUBLIC_KEYS_PATH`` (in prod a ConfigMap) and refuses a private key there. In
dev/test, with that unset, the API derives them from the signing key file, which the
first process that needs it creates, so the API and the issuer agree without a setup
step. Retired keys (``TB_TICKETS_PREVIOUS_KEYS``, or later entries of the public list)
stay in the JWKS so tickets signed before a rotation still verify.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from litestar.datastructures import State

from core.errors import Unavailable
from core.settings import Settings
from core.tickets import Jwks, generate_private_key_pem, jwks


class PrivateKeyExposed(ValueError):
    """A private key where the API expects only public ones."""


def _public_pems(spec: str) -> list[bytes]:
    pems = [Path(p.strip()).read_bytes() for p in spec.split(",") if p.strip()]
    for pem in pems:
        if b"PRIVATE KEY" in pem:
            raise PrivateKeyExposed(
                "TB_TICKETS_PUBLIC_KEYS_PATH names a private key; the API needs only the "
                "public half (openssl pkey -in signing-key.pem -pubout)"
            )
    return pems


def private_key_pem(path: Path, settings: Settings) -> bytes:
    """The Ed25519 private key at ``path``; outside prod the first process creates it."""
    if not path.exists() and settings.env != "prod":
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(generate_private_key_pem())
        tmp.chmod(0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # first writer wins, like the issuer
        tmp.unlink()
    return path.read_bytes()


def _read_or_create(settings: Settings) -> list[bytes]:
    if settings.tickets.public_keys_path:
        return _public_pems(settings.tickets.public_keys_path)
    pems = [private_key_pem(Path(settings.tickets.signing_key_path), settings)]
    pems += [
        Path(p.strip()).read_bytes() for p in settings.tickets.previous_keys.split(",") if p.strip()
    ]
    return pems


def ticket_jwks(state: State) -> Jwks:
    """The public ticket keys, read once per process."""
    cached = getattr(state, "ticket_jwks", None)
    if isinstance(cached, Jwks):
        return cached
    settings: Settings = state.settings
    try:
        key_set = jwks(_read_or_create(settings))
    except PrivateKeyExposed:
        raise
    except (OSError, ValueError) as exc:
        raise Unavailable("ticket keys are not available") from exc
    state.ticket_jwks = key_set
    return key_set
