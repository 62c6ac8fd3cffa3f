"""Per-IP and per-user rate limits kept in Redis Cluster, shared by every API replica.

A request with a valid bearer token spends its user's budget; any other request spends
its client address's budget (an IPv6 client's /64, since one host owns a whole /64).
Thousands of buyers behind one carrier NAT are not throttled as one client, while
anonymous floods and token guessing are. Hold attempts do not come here: they spend the
buyer's budget for the event inside the hold script (``core.holds.AttemptBudget``).

The budget is a GCRA (``lua/ratelimit.lua``) per client in Redis, with time from Redis.
A replica leases cells of it and spends them locally: one cell at a time for a quiet
client, more for a busy one (up to ``MAX_LEASE``), so a flood from one address costs a
Redis call per lease, not per request. Cells leased and not spent within ``LEASE_S`` are
lost: across all replicas the limit is never looser than configured. A client refused
once is refused locally until its ``Retry-After``. At most ``burst_s`` worth of the
budget may be spent at once (never less than ``MIN_BURST`` requests).

If Redis cannot be reached, the replica decides alone for ``fallback_s`` with the same
GCRA in its own memory: the limit stays in force per replica (bounded: N replicas allow
at most N times the budget), and each such decision is counted in
``ticketbuster_ratelimit_local_decisions_total``.

``X-Forwarded-For`` is honoured only when the peer is one of ``TB_API_TRUSTED_PROXIES``
(IPs or CIDRs): the client is the right-most address that is not a trusted proxy.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from typing import Any, Final

import msgspec
from litestar.types import Scope
from redis.asyncio import RedisCluster

from api.metrics import RATE_LIMIT_LOCAL
from api.startup import Network
from core.inventory import LUA_DIR
from core.inventory_link import LinkError, Route, Script, ScriptLink

log = logging.getLogger("ticketbuster.api.ratelimit")

SCRIPT = (LUA_DIR / "ratelimit.lua").read_text(encoding="utf-8")

# Cells a replica may lease at once for one busy client, and how long they stay usable.
MAX_LEASE: Final = 32
LEASE_S: Final = 1.0
# A client with more refills than this in one second is busy: it gets larger leases.
BUSY_REFILLS: Final = 8
MIN_BURST: Final = 10
# Clients remembered per replica (leases, refusals, local fallback state).
MAX_KEYS: Final = 50_000


class Decision(msgspec.Struct, frozen=True):
    allowed: bool
    limit: int
    remaining: int
    retry_after_s: int
    reset_s: int
    window_s: int
    scope: str  # "ip" or "user"

    def headers(self) -> list[tuple[bytes, bytes]]:
        """The IETF httpapi fields (draft-ietf-httpapi-ratelimit-headers: ``RateLimit`` and
        ``RateLimit-Policy`` as structured fields naming the policy, "user" or "ip"), and
        the earlier drafts' ``RateLimit-Limit/-Remaining/-Reset`` that clients already read."""
        name = self.scope.encode()
        return [
            (b"ratelimit", b'"%s";r=%d;t=%d' % (name, self.remaining, self.reset_s)),
            (b"ratelimit-policy", b'"%s";q=%d;w=%d' % (name, self.limit, self.window_s)),
            (b"ratelimit-limit", b"%d" % self.limit),
            (b"ratelimit-remaining", b"%d" % self.remaining),
            (b"ratelimit-reset", b"%d" % self.reset_s),
        ]


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


def address_key(ip: str) -> str:
    """What one client's budget is kept under: the address, or an IPv6 address's /64."""
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    except ValueError:
        return ip


def burst_of(limit: int, window_s: int, burst_s: float) -> int:
    """Requests allowed at once: ``burst_s`` worth of the budget, at least MIN_BURST."""
    return min(limit, max(MIN_BURST, math.ceil(limit * burst_s / window_s)))


class _Lease:
    __slots__ = ("expires", "refills", "remaining", "tokens", "window_start")

    def __init__(self) -> None:
        self.tokens = 0
        self.remaining = 0
        self.expires = 0.0
        self.refills = 0
        self.window_start = 0.0


class RateLimiter:
    """GCRA limits in Redis, leased per replica: ``hit(scope, ident, limit, window_s)``."""

    def __init__(
        self,
        redis: RedisCluster | None = None,
        namespace: str = "tb:rl",
        *,
        link: ScriptLink | None = None,
        fallback_s: float = 5.0,
        burst_s: float = 10.0,
    ) -> None:
        if link is None:
            if redis is None:
                raise ValueError("RateLimiter needs a Redis client or a script link")
            link = ScriptLink.for_client(redis)
        self.link = link
        self.namespace = namespace
        self.fallback_s = fallback_s
        self.burst_s = burst_s
        self._script = Script(SCRIPT)
        self._routes: dict[str, Route] = {}
        self._leases: dict[str, _Lease] = {}
        # key -> (allowed again at, full budget back at), monotonic seconds.
        self._refused: dict[str, tuple[float, float]] = {}
        # Local GCRA state (theoretical arrival time, monotonic s) while Redis is away.
        self._local: dict[str, float] = {}
        self._fallback_until = 0.0
        self._last_error_log = 0.0

    @property
    def deciding_locally(self) -> bool:
        """True for ``fallback_s`` after Redis failed: this replica decides alone."""
        return time.monotonic() < self._fallback_until

    def _key(self, scope: str, ident: str, limit: int, window_s: int) -> str:
        # The policy is part of the key: GCRA state only makes sense for one (limit, window),
        # and apps with different policies (tests, canaries) must not disturb each other.
        return f"{self.namespace}:{scope}:{limit}/{window_s}:{ident}"

    @staticmethod
    def _bounded(table: dict[str, Any]) -> None:
        if len(table) >= MAX_KEYS:
            table.clear()

    def refused_now(self, scope: str, ident: str, limit: int, window_s: int) -> Decision | None:
        """The local refusal of a client still inside its Retry-After, if any (no Redis)."""
        key = self._key(scope, ident, limit, window_s)
        refused = self._refused.get(key)
        if refused is None:
            return None
        now = time.monotonic()
        allow_at, reset_at = refused
        if now >= allow_at:
            del self._refused[key]
            return None
        return Decision(
            allowed=False,
            limit=limit,
            remaining=0,
            retry_after_s=max(1, math.ceil(allow_at - now)),
            reset_s=math.ceil(max(0.0, reset_at - now)),
            window_s=window_s,
            scope=scope,
        )

    async def hit(self, scope: str, ident: str, limit: int, window_s: int) -> Decision:
        """Spend one request of the client's budget (or refuse it)."""
        refused = self.refused_now(scope, ident, limit, window_s)
        if refused is not None:
            return refused
        key = self._key(scope, ident, limit, window_s)
        now = time.monotonic()
        lease = self._leases.get(key)
        if lease is not None and lease.tokens > 0 and now < lease.expires:
            lease.tokens -= 1
            return self._allowed(scope, limit, window_s, lease.remaining + lease.tokens)
        if self.deciding_locally:
            return self._decide_locally(key, scope, limit, window_s, now)
        if lease is None:
            self._bounded(self._leases)
            lease = self._leases[key] = _Lease()
        if now - lease.window_start > 1.0:
            lease.window_start, lease.refills = now, 0
        lease.refills += 1
        want = 1 if lease.refills <= BUSY_REFILLS else min(MAX_LEASE, max(1, limit // 20))
        burst = burst_of(limit, window_s, self.burst_s)
        try:
            granted, remaining, retry_ms, reset_ms = await self.link.run(
                self._script, self._route(key), [limit, window_s * 1000, burst, want]
            )
        except LinkError as exc:
            self._fail(exc)
            return self._decide_locally(key, scope, limit, window_s, now)
        now = time.monotonic()
        if granted > 0:
            if now >= lease.expires:
                lease.tokens = 0
            lease.tokens += int(granted) - 1
            lease.remaining = int(remaining)
            lease.expires = now + LEASE_S
            return self._allowed(scope, limit, window_s, lease.remaining + lease.tokens)
        if lease.tokens > 0 and now < lease.expires:  # another caller's lease came back first
            lease.tokens -= 1
            return self._allowed(scope, limit, window_s, lease.tokens)
        self._bounded(self._refused)
        self._refused[key] = (now + int(retry_ms) / 1000, now + int(reset_ms) / 1000)
        return Decision(
            allowed=False,
            limit=limit,
            remaining=0,
            retry_after_s=max(1, math.ceil(int(retry_ms) / 1000)),
            reset_s=math.ceil(int(reset_ms) / 1000),
            window_s=window_s,
            scope=scope,
        )

    def _route(self, key: str) -> Route:
        route = self._routes.get(key)
        if route is None:
            self._bounded(self._routes)
            route = self._routes[key] = Route([key])
        return route

    @staticmethod
    def _allowed(scope: str, limit: int, window_s: int, remaining: int) -> Decision:
        return Decision(
            allowed=True,
            limit=limit,
            remaining=remaining,
            retry_after_s=0,
            reset_s=window_s,
            window_s=window_s,
            scope=scope,
        )

    def _decide_locally(
        self, key: str, scope: str, limit: int, window_s: int, now: float
    ) -> Decision:
        RATE_LIMIT_LOCAL.inc()
        interval = window_s / limit
        burst = burst_of(limit, window_s, self.burst_s)
        tat = max(self._local.get(key, now), now)
        allow_at = tat + interval - burst * interval
        if now < allow_at:
            return Decision(
                allowed=False,
                limit=limit,
                remaining=0,
                retry_after_s=max(1, math.ceil(allow_at - now)),
                reset_s=math.ceil(tat - now),
                window_s=window_s,
                scope=scope,
            )
        self._bounded(self._local)
        self._local[key] = tat + interval
        remaining = math.floor((now - (tat + interval - burst * interval)) / interval)
        return self._allowed(scope, limit, window_s, max(0, remaining))

    def _fail(self, exc: BaseException) -> None:
        now = time.monotonic()
        self._fallback_until = now + self.fallback_s
        self._local.clear()
        if now - self._last_error_log > 10:
            self._last_error_log = now
            log.warning(
                "rate limiter cannot reach Redis; deciding locally for %.0fs: %s: %s",
                self.fallback_s,
                type(exc).__name__,
                exc,
            )
