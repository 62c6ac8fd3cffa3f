"""Per-IP and per-user rate limits kept in Redis Cluster, shared by every API replica.

A request with a valid bearer token spends its user's budget; any other request
spends its client address's budget. So a request costs one Redis round trip,
and thousands of buyers behind one carrier NAT are not throttled as one
client, while anonymous floods and token guessing are.

One GCRA script (``api/ratelimit.lua``) per check, on one key, so it runs in
one slot and atomically; time comes from Redis, not from the replicas' clocks.
Only ``/api/`` is limited (static PWA files and probes are not). Responses
carry ``RateLimit-Limit``, ``RateLimit-Remaining``, ``RateLimit-Reset`` and
``RateLimit-Policy`` (IETF draft) of the budget spent; a refusal is a 429
problem with ``Retry-After``.

``X-Forwarded-For`` is honoured only when the peer is one of
``TB_API_TRUSTED_PROXIES`` (IPs or CIDRs): the client is the right-most address
that is not a trusted proxy. If Redis is unreachable or slow the limiter fails
open (and logs), and stops asking for a few seconds so a stalled Redis does not
add its timeout to every request: a broken limiter must not take the sale down;
``/readyz`` reports Redis.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from litestar.config.cors import CORSConfig
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from redis.asyncio import RedisCluster

from api.auth.principal import principal_from_scope
from api.edge import cors_headers
from api.errors import send_problem
from core.errors import RateLimited
from core.settings import ApiSettings

log = logging.getLogger("ticketbuster.api.ratelimit")

SCRIPT = (Path(__file__).parent / "ratelimit.lua").read_text()


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    reset_s: int
    window_s: int
    scope: str  # "ip" or "user"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return [
            (b"ratelimit-limit", str(self.limit).encode()),
            (b"ratelimit-remaining", str(self.remaining).encode()),
            (b"ratelimit-reset", str(self.reset_s).encode()),
            (b"ratelimit-policy", f"{self.limit};w={self.window_s}".encode()),
        ]


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_trusted_proxies(spec: str) -> list[Network]:
    return [ipaddress.ip_network(p.strip(), strict=False) for p in spec.split(",") if p.strip()]


def _is_trusted(addr: str, trusted: list[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_ip(scope: Scope, trusted: list[Network]) -> str:
    """The peer address, or the client named by X-Forwarded-For if the peer is trusted."""
    peer = (scope.get("client") or ("unknown", 0))[0]
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    forwarded: list[str] = []
    for name, value in scope.get("headers", ()):
        if name == b"x-forwarded-for":
            forwarded += [p.strip() for p in value.decode("latin-1").split(",") if p.strip()]
    for addr in reversed(forwarded):
        if not _is_trusted(addr, trusted):
            try:
                return str(ipaddress.ip_address(addr))
            except ValueError:
                return peer  # garbage from a trusted proxy's client: count the proxy
    return forwarded[0] if forwarded else peer


class RateLimiter:
    """GCRA limits in Redis: ``hit(key, limit, window_s)``."""

    def __init__(
        self,
        redis: RedisCluster,
        namespace: str = "tb:rl",
        pause_after_failure_s: float = 5.0,
    ) -> None:
        self.redis = redis
        self.namespace = namespace
        self.pause_after_failure_s = pause_after_failure_s
        self._script = redis.register_script(SCRIPT)
        self._last_error_log = 0.0
        self._paused_until = 0.0
        # key -> (allowed again at, full budget back at), monotonic seconds.
        self._refused: dict[str, tuple[float, float]] = {}
        self.max_refused = 10_000

    @property
    def paused(self) -> bool:
        """True for a few seconds after a failure: requests pass unlimited meanwhile."""
        return time.monotonic() < self._paused_until

    async def hit(self, scope: str, ident: str, limit: int, window_s: int) -> Decision:
        # The policy is part of the key: GCRA state only makes sense for one (limit, window),
        # and apps with different policies (tests, canaries) must not disturb each other.
        key = f"{self.namespace}:{scope}:{limit}/{window_s}:{ident}"
        now = time.monotonic()
        refused = self._refused.get(key)
        if refused is not None:
            allow_at, reset_at = refused
            if now < allow_at:
                # Refused until allow_at whatever the other replicas do (they can only push
                # it later): answer here, and a flooding client costs Redis nothing.
                return Decision(
                    allowed=False,
                    limit=limit,
                    remaining=0,
                    retry_after_s=max(1, math.ceil(allow_at - now)),
                    reset_s=math.ceil(max(0.0, reset_at - now)),
                    window_s=window_s,
                    scope=scope,
                )
            del self._refused[key]
        # Bounded by the client's socket timeout (TB_REDIS_SOCKET_TIMEOUT_S).
        allowed, remaining, retry_ms, reset_ms = await self._script(
            keys=[key], args=[limit, window_s * 1000]
        )
        if not allowed:
            if len(self._refused) >= self.max_refused:
                self._refused = {k: v for k, v in self._refused.items() if v[0] > now}
            if len(self._refused) < self.max_refused:
                self._refused[key] = (now + int(retry_ms) / 1000, now + int(reset_ms) / 1000)
        return Decision(
            allowed=bool(allowed),
            limit=limit,
            remaining=int(remaining),
            retry_after_s=max(1, math.ceil(int(retry_ms) / 1000)) if not allowed else 0,
            reset_s=math.ceil(int(reset_ms) / 1000),
            window_s=window_s,
            scope=scope,
        )

    def log_failure(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._paused_until = now + self.pause_after_failure_s
        if now - self._last_error_log > 10:
            self._last_error_log = now
            log.warning("rate limiter unavailable, failing open: %s: %s", type(exc).__name__, exc)


class RateLimitMiddleware:
    """Spends the user's (valid token) or the address's budget for each ``/api/`` request."""

    def __init__(
        self,
        app: ASGIApp,
        limiter: Callable[[], RateLimiter | None],
        settings: ApiSettings,
        path_prefix: str = "/api/",
        cors: CORSConfig | None = None,
    ) -> None:
        self.app = app
        self.limiter = limiter
        self.settings = settings
        self.cors = cors
        self.trusted = parse_trusted_proxies(settings.trusted_proxies)
        self.path_prefix = path_prefix

    async def _decide(self, limiter: RateLimiter, scope: Scope) -> list[Decision]:
        """One check, so one Redis round trip: the user's budget when the token is valid,
        else the client address's."""
        s = self.settings
        principal = principal_from_scope(scope)
        if principal is not None:
            return [
                await limiter.hit(
                    "user", principal.sub, s.rate_limit_per_user, s.rate_limit_window_s
                )
            ]
        ip = client_ip(scope, self.trusted)
        return [await limiter.hit("ip", ip, s.rate_limit_per_ip, s.rate_limit_window_s)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limiter = self.limiter()
        if (
            limiter is None
            or limiter.paused
            or not self.settings.rate_limit_enabled
            or scope["type"] != ScopeType.HTTP
            or not scope.get("path", "").startswith(self.path_prefix)
            or scope.get("method") == "OPTIONS"
        ):
            await self.app(scope, receive, send)
            return
        try:
            decisions = await self._decide(limiter, scope)
        except Exception as exc:  # fail open; /readyz reports Redis
            limiter.log_failure(exc)
            await self.app(scope, receive, send)
            return
        denied = [d for d in decisions if not d.allowed]
        if denied:
            worst = max(denied, key=lambda d: d.retry_after_s)
            headers = {k.decode(): v.decode() for k, v in worst.headers()}
            headers.update(cors_headers(scope, self.cors))
            await send_problem(
                send,
                RateLimited(
                    f"Too many requests for this {'user' if worst.scope == 'user' else 'client'};"
                    f" retry in {worst.retry_after_s}s.",
                    retry_after_s=worst.retry_after_s,
                ),
                instance=scope.get("path"),
                request_id=scope.get("state", {}).get("request_id"),
                extra_headers=headers,
            )
            return
        tightest = min(decisions, key=lambda d: d.remaining)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(tightest.headers())
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
