"""The edge: one ASGI layer in front of Litestar for everything a request meets first.

In order, for HTTP and WebSocket requests:

1. **Request id** — ``X-Request-ID`` if sane, else a new one; echoed on the response and
   carried by every log line of the request.
2. **Capacity** — at most ``TB_API_MAX_IN_FLIGHT`` ``/api/`` requests at once per process;
   the next one is answered 503 + ``Retry-After`` at once (no token check, no Redis).
3. **Token** — a bearer token, when sent, is verified (``api.auth.tokens``; verified tokens
   are cached). The verdict goes into the scope state for the guards and handlers; the
   edge never refuses for it (public endpoints stay public). An address that keeps sending
   bad tokens is refused *before* its next signature check.
4. **Rate limit** — the user's budget (valid token) or the address's (``api.ratelimit``).
   Hold attempts (``POST /api/v1/events/{id}/holds``) are the exception: they spend the
   buyer's budget for the event inside the hold script, in the same Redis call as the
   hold; if a hold request ends before reaching that script (a bad body, a closed sale),
   its cost goes on the user's budget after the answer, so nothing goes uncounted.
5. **Deadline** — a request whose response has not started after
   ``TB_API_REQUEST_TIMEOUT_S`` is cancelled and answered 503 (one timer per process
   checks them all; a started response is never cut).
6. **Direct routes** — hold attempts and orders go to ``api.direct`` (the same rules and
   answers as the Litestar routes, without the framework's per-route work); what it does
   not take goes on to Litestar.
7. **The answer** — security headers, rate-limit headers and the request id are added in
   one pass; a response that starts before the request body was read closes the
   connection (the unread body must not be parsed as the next request).
8. **Metrics and access log** — request counts and durations by route template
   (pre-bound metric children), one batched JSON access-log line.

One layer instead of five wrapping ``send``: the hot path pays for one closure.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Final, Protocol

from litestar.config.cors import CORSConfig
from litestar.types import ASGIApp, Scope

from api.auth.principal import AUTH_ERROR_KEY, PRINCIPAL_KEY, Principal, bearer_token
from api.auth.tokens import TokenVerifier
from api.errors import send_problem
from api.logs import AccessLog, request_id_var
from api.metrics import (
    HTTP_DURATION,
    HTTP_ERRORS,
    HTTP_IN_PROGRESS,
    HTTP_REQUESTS,
    REQUESTS_SHED,
    TALLY,
)
from api.ratelimit import Decision, RateLimiter, address_key, client_ip
from api.startup import parse_trusted_proxies
from core.errors import RateLimited, Unauthorized, Unavailable
from core.settings import ApiSettings

log = logging.getLogger("ticketbuster.api.edge")

# Request ids: a random prefix per process and a counter (a uuid4 per request costs an
# os.urandom system call).
_ID_PREFIX = secrets.token_hex(8)
_ids = itertools.count(1)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

# Probes and scrapes: logged only when they fail, and not counted as requests.
QUIET_PATHS: Final = frozenset({"/healthz", "/readyz", "/metrics"})
API_PREFIX: Final = "/api/"
# The one route whose budget is spent inside its Redis script.
_HOLD_PATH = re.compile(r"^/api/v1/events/[0-9]+/holds$")
# State key a handler sets once it has spent the request's budget in its own script.
BUDGET_SPENT_KEY: Final = "budget_spent"
# Bad tokens one address may send per minute before its tokens are refused unchecked.
BAD_TOKENS_PER_MIN: Final = 60

# The PWA is same-origin ES modules, a service worker, a manifest and a WebSocket; the
# scanner's QR decoder is WebAssembly ('wasm-unsafe-eval' compiles it, no JS eval).
CSP_APP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; "
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


def _next_request_id() -> str:
    return f"{_ID_PREFIX}{next(_ids):016x}"  # 32 hex digits, like a uuid4


def cors_headers(scope: Scope, cors: CORSConfig | None) -> dict[str, str]:
    """The CORS headers Litestar's middleware puts on a simple (non-preflight) response,
    for a response written outside it (the edge's 429/503, the direct hold route)."""
    if cors is None:
        return {}
    origin = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"origin"), None)
    if origin is None:
        return {}
    headers = dict(cors.simple_headers)
    if cors.is_allow_all_origins:
        if any(k == b"cookie" for k, _ in scope["headers"]):
            headers["Access-Control-Allow-Origin"] = origin
            headers["Vary"] = "Origin"
    elif cors.is_origin_allowed(origin):
        headers["Access-Control-Allow-Origin"] = origin
        headers["Vary"] = "Origin"
    headers["Access-Control-Allow-Headers"] = ", ".join(sorted(set(cors.allow_headers)))
    headers["Access-Control-Allow-Methods"] = ", ".join(sorted(set(cors.allow_methods)))
    return headers


def security_headers(
    *, csp: str, hsts: bool, connect_origins: tuple[str, ...] = ()
) -> list[tuple[bytes, bytes]]:
    """nosniff, Referrer-Policy, CSP with ``frame-ancestors 'none'``, HSTS in prod."""
    extra = " ".join(o for o in connect_origins if o)
    if extra:
        csp = csp.replace("connect-src 'self' ws: wss:", f"connect-src 'self' ws: wss: {extra}")
    headers = [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"strict-origin-when-cross-origin"),
        (b"x-frame-options", b"DENY"),
        (b"content-security-policy", csp.encode()),
        (b"cross-origin-opener-policy", b"same-origin"),
        (b"permissions-policy", b"camera=(self), geolocation=(), microphone=()"),
    ]
    if hsts:
        headers.append((b"strict-transport-security", b"max-age=63072000; includeSubDomains"))
    return headers


class DirectRoute(Protocol):
    """Routes the edge serves without the framework (``api.direct``)."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        """None once answered, else the ``receive`` to hand the request on with (the one
        it was given when the request is not for one of its routes)."""


class _Request:
    """What the edge tracks of one request in flight."""

    __slots__ = ("body_done", "body_left", "deadline", "status", "task", "timed_out")

    def __init__(self, task: asyncio.Task[Any] | None, deadline: float) -> None:
        self.task = task
        self.deadline = deadline
        self.status = 0
        self.timed_out = False
        self.body_done = False
        self.body_left = 0


class Edge:
    """The one ASGI layer around the Litestar app (see the module docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        settings: ApiSettings,
        *,
        verifier: Callable[[], TokenVerifier | None],
        limiter: Callable[[], RateLimiter | None],
        cors: CORSConfig | None = None,
        hsts: bool = False,
        connect_origins: tuple[str, ...] = (),
        docs_prefix: str = "/schema",
        app_name: str = "ticketbuster",
        access_log: AccessLog | None = None,
        direct: DirectRoute | None = None,
    ) -> None:
        self.app = app
        self.direct = direct
        self.settings = settings
        self.verifier = verifier
        self.limiter = limiter
        self.cors = cors
        self.docs_prefix = docs_prefix
        self.app_name = app_name
        self.trusted = parse_trusted_proxies(settings.trusted_proxies)
        self.app_headers = security_headers(csp=CSP_APP, hsts=hsts, connect_origins=connect_origins)
        self.docs_headers = security_headers(csp=CSP_DOCS, hsts=hsts)
        self.access_log = access_log or AccessLog()
        self.in_flight = 0
        self._requests: dict[int, _Request] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._metric_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._in_progress = TALLY.counter(HTTP_IN_PROGRESS.labels("*", "*", "*", app_name))

    # -- the request ----------------------------------------------------------------------

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        state = scope.setdefault("state", {})
        request_id = None
        bearer = None
        body_length = 0  # -1: unknown (chunked)
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
            elif name == b"authorization":
                bearer = value
            elif name == b"content-length":
                # At most 18 digits: int() of thousands of digits raises (and wastes CPU).
                body_length = int(value) if value.isdigit() and len(value) <= 18 else -1
            elif name == b"transfer-encoding":
                body_length = -1
        request_id = request_id or _next_request_id()
        state["request_id"] = request_id
        token = request_id_var.set(request_id)
        path: str = scope["path"]
        api = path.startswith(API_PREFIX)
        http = kind == "http"
        request = _Request(None, 0.0)
        request.body_done = body_length == 0
        request.body_left = body_length
        try:
            if api and http and self.in_flight >= self.settings.max_in_flight > 0:
                REQUESTS_SHED.labels(reason="capacity").inc()
                await self._refuse(
                    scope, send, request, Unavailable("The API is at capacity; retry shortly.", 1)
                )
                return
            refusal = await self._admit(scope, state, bearer, api, http)
            if refusal is not None:
                await self._refuse(scope, send, request, refusal[0], refusal[1])
                return
            await self._serve(scope, receive, send, request, state, api and http)
        except Exception as exc:
            # Only a bug in the edge gets here (Litestar's handler renders the rest): still a
            # problem+json 500 without details, if nothing was sent yet.
            log.error("unhandled exception in the edge", exc_info=exc)
            if http and not request.status:
                await self._refuse(scope, send, request, exc)
        finally:
            self._finish(scope, state, request, started, path, api)
            request_id_var.reset(token)
            if TALLY.due(idle=self.in_flight == 0):
                TALLY.flush()

    async def _admit(
        self, scope: Any, state: dict[str, Any], bearer: bytes | None, api: bool, http: bool
    ) -> tuple[Exception, list[tuple[bytes, bytes]]] | None:
        """Verify the token and spend the budget; the refusal to send, if any."""
        raw = bearer_token(scope, bearer)
        principal: Principal | None = None
        limiter = self.limiter() if self.settings.rate_limit_enabled else None
        ip = ""
        if raw is not None:
            verifier = self.verifier()
            if limiter is not None:
                ip = address_key(client_ip(scope, self.trusted))
                refused = limiter.refused_now("badtoken", ip, BAD_TOKENS_PER_MIN, 60)
                if refused is not None:
                    return self._limited(refused, "Too many invalid tokens from this client")
            if verifier is None:
                state[AUTH_ERROR_KEY] = "Token validation is not configured."
            else:
                try:
                    principal = await verifier.verify(raw)
                    state[PRINCIPAL_KEY] = principal
                except Unauthorized as exc:
                    state[AUTH_ERROR_KEY] = exc.detail
                    if limiter is not None:
                        await limiter.hit("badtoken", ip, BAD_TOKENS_PER_MIN, 60)
                except Exception:  # a verifier bug must not become a bare 500
                    log.exception("token verification failed unexpectedly")
                    state[AUTH_ERROR_KEY] = "The token could not be verified."
        if limiter is None or not api or scope.get("method") == "OPTIONS":
            return None
        s = self.settings
        if principal is not None:
            if http and scope["method"] == "POST" and _HOLD_PATH.match(scope["path"]):
                refused = limiter.refused_now(
                    "user", principal.sub, s.rate_limit_per_user, s.rate_limit_window_s
                )
                if refused is not None:
                    return self._limited(refused, "Too many requests for this user")
                state[BUDGET_SPENT_KEY] = False  # the hold script spends it
                return None
            decision = await limiter.hit(
                "user", principal.sub, s.rate_limit_per_user, s.rate_limit_window_s
            )
            what = "Too many requests for this user"
        else:
            ip = ip or address_key(client_ip(scope, self.trusted))
            decision = await limiter.hit("ip", ip, s.rate_limit_per_ip, s.rate_limit_window_s)
            what = "Too many requests for this client"
        if not decision.allowed:
            return self._limited(decision, what)
        state["ratelimit"] = decision
        return None

    @staticmethod
    def _limited(decision: Decision, what: str) -> tuple[Exception, list[tuple[bytes, bytes]]]:
        return (
            RateLimited(
                f"{what}; retry in {decision.retry_after_s}s.",
                retry_after_s=decision.retry_after_s,
            ),
            decision.headers(),
        )

    async def _serve(
        self,
        scope: Any,
        receive: Any,
        send: Any,
        request: _Request,
        state: dict[str, Any],
        guarded: bool,
    ) -> None:
        path: str = scope["path"]
        extra = self.docs_headers if path.startswith(self.docs_prefix) else self.app_headers
        request_id = state["request_id"].encode()

        async def edge_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                request.status = message["status"]
                headers = list(message.get("headers") or ())
                present = {name for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                headers.append((b"x-request-id", request_id))
                decision = state.get("ratelimit")
                if decision is not None:
                    headers.extend(decision.headers())
                if not request.body_done:
                    headers.append((b"connection", b"close"))
                message["headers"] = headers
            elif message["type"] == "websocket.accept":
                request.status = 101
            elif message["type"] == "websocket.close" and not request.status:
                request.status = 403  # refused during the handshake
            await send(message)

        async def edge_receive() -> Any:
            message = await receive()
            if message["type"] == "http.request":
                if message.get("more_body", False):
                    # Granian hands a small body over as the bytes, then an empty last
                    # chunk whose wait is a thread hand-off: once Content-Length bytes
                    # are in, the body is complete.
                    left = request.body_left - len(message.get("body", b""))
                    request.body_left = left
                    if left == 0:
                        message["more_body"] = False
                        request.body_done = True
                else:
                    request.body_done = True
            elif message["type"] == "http.disconnect":
                request.body_done = True
            return message

        app_receive = edge_receive if not request.body_done else receive
        if not guarded:
            await self.app(scope, app_receive, edge_send)
            return
        self.in_flight += 1
        self._in_progress.inc()
        timeout = self.settings.request_timeout_s
        key = 0
        if timeout > 0:
            request.task = asyncio.current_task()
            request.deadline = time.monotonic() + timeout
            key = id(request)
            self._requests[key] = request
            self._arm_sweeper()
        try:
            rest = app_receive
            if self.direct is not None:
                rest = await self.direct(scope, app_receive, edge_send)
            if rest is not None:
                await self.app(scope, rest, edge_send)
        except asyncio.CancelledError:
            if not request.timed_out:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            REQUESTS_SHED.labels(reason="timeout").inc()
            await self._refuse(
                scope, send, request, Unavailable("The request took too long; retry shortly.", 1)
            )
        finally:
            self.in_flight -= 1
            self._in_progress.dec()
            if key:
                self._requests.pop(key, None)

    # -- deadlines --------------------------------------------------------------------------

    def _arm_sweeper(self) -> None:
        if self._sweeper is None:
            interval = min(1.0, max(0.05, self.settings.request_timeout_s / 10))
            self._sweeper = asyncio.get_running_loop().call_later(interval, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for request in list(self._requests.values()):
            if request.deadline <= now and not request.status and not request.timed_out:
                request.timed_out = True
                if request.task is not None:
                    request.task.cancel()
        if self._requests:
            self._arm_sweeper()

    # -- answers the edge writes itself ---------------------------------------------------

    async def _refuse(
        self,
        scope: Any,
        send: Any,
        request: _Request,
        exc: BaseException,
        headers: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        state = scope.get("state", {})
        if scope["type"] == "websocket":
            # Closed before the handshake completes: the client sees an HTTP 403.
            request.status = 403
            await send({"type": "websocket.close", "code": 4429})
            return
        extra = {k.decode(): v.decode() for k, v in headers}
        extra.update(cors_headers(scope, self.cors))
        for name, value in self.app_headers:
            extra.setdefault(name.decode(), value.decode())
        extra["X-Request-ID"] = state.get("request_id", "")
        if not request.body_done:
            extra["Connection"] = "close"
        request.status = getattr(exc, "status", 500)
        await send_problem(
            send,
            exc,
            instance=scope.get("path"),
            request_id=state.get("request_id"),
            extra_headers=extra,
        )

    # -- bookkeeping ------------------------------------------------------------------------

    def _finish(
        self, scope: Any, state: dict[str, Any], request: _Request, started: float,
        path: str, api: bool,
    ) -> None:  # fmt: skip
        elapsed = time.perf_counter() - started
        status = request.status
        if state.get(BUDGET_SPENT_KEY) is False:
            # A hold request that ended before its script: its cost goes on the user's budget.
            self._charge_later(state)
        template = scope.get("path_template")
        if template is not None and path not in QUIET_PATHS and scope["type"] == "http":
            self._observe(scope["method"], template, status, elapsed)
        if path in QUIET_PATHS and status < 400:
            return
        fields: dict[str, Any] = {
            "request_id": state.get("request_id"),
            "method": scope.get("method", "WS"),
            "path": path,
            "status": status,
            "duration_ms": round(elapsed * 1000, 2),
            "client": (scope.get("client") or ("", 0))[0],
        }
        self.access_log.write(fields, level="error" if status >= 500 else "info")

    def _observe(self, method: str, template: str, status: int, elapsed: float) -> None:
        key = (method, template, status)
        children = self._metric_children.get(key)
        if children is None:
            labels = (method, template, str(status), self.app_name)
            children = (
                TALLY.counter(HTTP_REQUESTS.labels(*labels)),
                TALLY.histogram(HTTP_DURATION.labels(*labels)),
            )
            if status >= 500:
                HTTP_ERRORS.labels(*labels).inc()
            if len(self._metric_children) < 10_000:  # routes x methods x statuses: bounded
                self._metric_children[key] = children
        elif status >= 500:
            HTTP_ERRORS.labels(method, template, str(status), self.app_name).inc()
        children[0].inc()
        children[1].observe(elapsed)

    def _charge_later(self, state: dict[str, Any]) -> None:
        limiter = self.limiter()
        principal = state.get(PRINCIPAL_KEY)
        if limiter is None or not isinstance(principal, Principal):
            return
        s = self.settings
        task = asyncio.ensure_future(
            limiter.hit("user", principal.sub, s.rate_limit_per_user, s.rate_limit_window_s)
        )
        task.add_done_callback(_ignore_result)

    def close(self) -> None:
        self.access_log.flush()


def _ignore_result(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a failed charge is not an error to report
