"""The ticket signing keys as the API sees them: public keys only, for JWKS and check-in.

The private key file is the issuer's (``TB_TICKETS_SIGNING_KEY_PATH``; in prod a mounted
Secret). In dev/test the first process that needs it creates it, so the API and the
issuer agree without a setup step. Retired keys (``TB_TICKETS_PREVIOUS_KEYS``) stay in
the JWKS so tickets signed before a rotation still verify.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from litestar.datastructures import State

from core.errors import Unavailable
from core.settings import Settings
from core.tickets import Jwks, generate_private_key_pem, jwks


def _read_or_create(settings: Settings) -> list[bytes]:
    path = Path(settings.tickets.signing_key_path)
    if not path.exists() and settings.env != "prod":
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(generate_private_key_pem())
        tmp.chmod(0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)  # first writer wins, like the issuer
        tmp.unlink()
    pems = [path.read_bytes()]
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
    except OSError as exc:
        raise Unavailable("ticket keys are not available") from exc
    state.ticket_jwks = key_set
    return key_set
