"""Outermost ASGI layers: request id + access log, and security headers.

They wrap the whole Litestar handler (CORS, router and exception handler), so
they also cover 404s for unknown paths and responses written by other
middleware.
"""

from __future__ import annotations

import itertools
import logging
import re
import secrets
import time

from litestar.config.cors import CORSConfig
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import send_problem
from api.logs import request_id_var

access_log = logging.getLogger("ticketbuster.access")

# Request ids: a random prefix per process and a counter (a uuid4 per request costs an
# os.urandom system call, measured at ~15% of a bare request's time in this layer).
_ID_PREFIX = secrets.token_hex(8)
_ids = itertools.count(1)


def _next_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):016x}"  # 32 hex digits, like a uuid4


# Probes and scrapes: logged only when they fail, or they would drown the access log.
QUIET_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# The PWA is same-origin ES modules, a service worker, a manifest and a WebSocket.
CSP_APP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; font-src 'self'; connect-src 'self' ws: wss:; "
    "worker-src 'self'; manifest-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)
# The interactive API docs load their script from a CDN and configure it inline.
CSP_DOCS = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
    "font-src 'self' data: https://cdn.jsdelivr.net https://fonts.gstatic.com; "
    "img-src 'self' data: https:; connect-src 'self'; object-src 'none'; base-uri 'self'; "
    "frame-ancestors 'none'"
)


class RequestContextMiddleware:
    """Gives each request an id (``X-Request-ID`` if sane, else a new UUID), echoes it,
    and writes one JSON access-log line when the response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in (ScopeType.HTTP, ScopeType.WEBSOCKET):
            await self.app(scope, receive, send)
            return
        request_id = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or _next_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "websocket.accept":
                status = 101
            elif message["type"] == "websocket.close" and not status:
                status = 403  # refused during the handshake
            elif message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            # Only a bug in an outer layer gets here (Litestar's handler renders the rest):
            # still a problem+json 500 without details, if nothing was sent yet.
            access_log.error("unhandled exception outside the app", exc_info=exc)
            if scope["type"] == ScopeType.HTTP and not status:
                await send_problem(
                    send_with_id, exc, instance=scope.get("path"), request_id=request_id
                )
        finally:
            path = scope.get("path", "")
            if not (path in QUIET_PATHS and status < 400):
                access_log.info(
                    "request",
                    extra={
                        "method": scope.get("method", "WS"),
                        "path": path,
                        "status": status,
                        "duration_ms": round((time.perf_counter() - started) * 1000, 2),
                        "client": (scope.get("client") or ("", 0))[0],
                    },
                )
            request_id_var.reset(token)


class SecurityHeadersMiddleware:
    """nosniff, Referrer-Policy, CSP with ``frame-ancestors 'none'``, HSTS in prod."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        hsts: bool,
        connect_origins: tuple[str, ...] = (),
        docs_prefix: str = "/schema",
    ) -> None:
        """``connect_origins``: other origins the PWA may call (the OIDC issuer)."""
        self.app = app
        self.hsts = hsts
        self.docs_prefix = docs_prefix
        extra = " ".join(o for o in connect_origins if o)
        self.csp_app = (
            CSP_APP.replace("connect-src 'self' ws: wss:", f"connect-src 'self' ws: wss: {extra}")
            if extra
            else CSP_APP
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        csp = CSP_DOCS if path.startswith(self.docs_prefix) else self.csp_app
        extra = [
            (b"x-content-type-options", b"nosniff"),
            (b"referrer-policy", b"strict-origin-when-cross-origin"),
            (b"x-frame-options", b"DENY"),
            (b"content-security-policy", csp.encode()),
            (b"cross-origin-opener-policy", b"same-origin"),
            (b"permissions-policy", b"camera=(self), geolocation=(), microphone=()"),
        ]
        if self.hsts:
            extra.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def cors_headers(scope: Scope, cors: CORSConfig | None) -> dict[str, str]:
    """CORS headers for a response written outside Litestar's CORS layer (a 429 or a shed
    503), so the PWA can read it."""
    if cors is None:
        return {}
    origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
    if origin is None or not cors.is_origin_allowed(origin):
        return {}
    headers = dict(cors.simple_headers)
    headers.setdefault("Access-Control-Allow-Origin", origin)
    headers["Vary"] = "Origin"
    return headers
