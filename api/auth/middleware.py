"""ASGI middleware that verifies a bearer token, when one is sent, before routing.

It never refuses a request by itself: public endpoints stay public. It leaves
the verified ``Principal`` (or the reason the token was refused) in the scope
state, where the ``principal`` dependency and the guards read it, and where the
rate limiter finds the user to count against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from urllib.parse import parse_qs

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send

from api.auth.principal import AUTH_ERROR_KEY, PRINCIPAL_KEY
from api.auth.tokens import TokenVerifier
from core.errors import Unauthorized

log = logging.getLogger("ticketbuster.api.auth")


def bearer_token(scope: Scope) -> str | None:
    """``Authorization: Bearer <jwt>``; for WebSockets also ``?access_token=`` (browsers
    cannot set headers on a WebSocket handshake)."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    if scope["type"] == ScopeType.WEBSOCKET:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        tokens = query.get("access_token")
        if tokens and tokens[0]:
            return tokens[0]
    return None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, verifier: Callable[[], TokenVerifier | None]) -> None:
        """``verifier`` returns the current verifier (the app's lifespan creates it)."""
        self.app = app
        self.verifier = verifier

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in (ScopeType.HTTP, ScopeType.WEBSOCKET):
            state = scope.setdefault("state", {})
            token = bearer_token(scope)
            if token is not None:
                verifier = self.verifier()
                if verifier is None:
                    state[AUTH_ERROR_KEY] = "Token validation is not configured."
                else:
                    try:
                        state[PRINCIPAL_KEY] = await verifier.verify(token)
                    except Unauthorized as exc:
                        state[AUTH_ERROR_KEY] = exc.detail
                    except Exception:  # a verifier bug must not become a bare 500
                        log.exception("token verification failed unexpectedly")
                        state[AUTH_ERROR_KEY] = "The token could not be verified."
        await self.app(scope, receive, send)
