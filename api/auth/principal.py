"""Who is calling: the ``Principal`` and the guards that check roles and scopes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs

import msgspec
from litestar.connection import ASGIConnection
from litestar.enums import ScopeType
from litestar.handlers.base import BaseRouteHandler
from litestar.types import Scope

from core.errors import Forbidden, Unauthorized

ROLES = ("buyer", "scanner", "organizer", "admin")
DEFAULT_ROLE = "buyer"
CLIENT_PREFIX = "client:"

# Where the auth middleware leaves its verdict in the ASGI scope state.
PRINCIPAL_KEY = "principal"
AUTH_ERROR_KEY = "auth_error"


class Principal(msgspec.Struct, frozen=True):
    """The authenticated caller: a person (roles) or a partner client (``client:<id>``, scopes)."""

    sub: str
    roles: frozenset[str] = frozenset()
    scopes: frozenset[str] = frozenset()
    # The organization an organizer acts for (the token's ``TB_AUTH_ORG_CLAIM``), if any.
    org: str | None = None

    @property
    def is_client(self) -> bool:
        return self.sub.startswith(CLIENT_PREFIX)

    def has_role(self, *roles: str) -> bool:
        return not self.roles.isdisjoint(roles)

    def has_scope(self, *scopes: str) -> bool:
        return not self.scopes.isdisjoint(scopes)


_MISSING: Any = object()


def bearer_token(scope: Scope, authorization: bytes | None = _MISSING) -> str | None:
    """``Authorization: Bearer <jwt>``; for WebSockets also ``?access_token=`` (browsers
    cannot set headers on a WebSocket handshake). ``authorization``: the header's value
    when the caller has already found it (None: there is none)."""
    if authorization is _MISSING:
        authorization = next(
            (value for name, value in scope.get("headers", ()) if name == b"authorization"),
            None,
        )
    if authorization is not None:
        scheme, _, token = authorization.decode("latin-1").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    if scope["type"] == ScopeType.WEBSOCKET:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        tokens = query.get("access_token")
        if tokens and tokens[0]:
            return tokens[0]
    return None


def principal_from_scope(scope: Scope) -> Principal | None:
    """The verified caller of this connection, or None (anonymous or invalid token)."""
    value = scope.get("state", {}).get(PRINCIPAL_KEY)
    return value if isinstance(value, Principal) else None


def require_principal(scope: Scope) -> Principal:
    principal = principal_from_scope(scope)
    if principal is not None:
        return principal
    reason = scope.get("state", {}).get(AUTH_ERROR_KEY)
    raise Unauthorized(reason if isinstance(reason, str) else "A bearer token is required.")


async def provide_principal(scope: Scope) -> Principal:
    """DI provider ``principal``: the caller, or 401 problem. Works for HTTP and WebSocket."""
    return require_principal(scope)


async def provide_optional_principal(scope: Scope) -> Principal | None:
    """DI provider ``optional_principal``: the caller if a valid token came, else None."""
    return principal_from_scope(scope)


# Guards are coroutines: Litestar runs a plain-function guard in a worker thread on every
# request (sync_to_thread), a thread hop these checks (no I/O) do not need.
Guard = Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], Awaitable[None]]


def requires_auth() -> Guard:
    """Guard: any valid token (401 otherwise)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        require_principal(connection.scope)

    return guard


def requires_role(*roles: str) -> Guard:
    """Guard: the caller has one of ``roles`` (401 without a token, 403 without the role)."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = require_principal(connection.scope)
        if not principal.has_role(*roles):
            raise Forbidden(f"This operation needs the role {' or '.join(roles)}.")

    return guard


def requires_scope(*scopes: str) -> Guard:
    """Guard: the caller's token carries at least one of ``scopes``."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = require_principal(connection.scope)
        if not principal.has_scope(*scopes):
            raise Forbidden(f"This operation needs the scope {' or '.join(scopes)}.")

    return guard


def requires_role_or_scope(roles: tuple[str, ...], scopes: tuple[str, ...]) -> Guard:
    """Guard: a person with one of ``roles`` or a partner client with one of ``scopes``."""

    async def guard(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
        principal = require_principal(connection.scope)
        if not (principal.has_role(*roles) or principal.has_scope(*scopes)):
            raise Forbidden(
                f"This operation needs the role {' or '.join(roles)} "
                f"or the scope {' or '.join(scopes)}."
            )

    return guard
