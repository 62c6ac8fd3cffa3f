"""Circuit breakers: a dependency that keeps failing is not called by every request.

``Breaker`` is closed while calls succeed. After ``threshold`` failures in a row it opens:
every call fails at once with ``Unavailable`` (503 + ``Retry-After``) for ``cool_down_s``.
Then it is half-open: one call goes through as a probe (the others still fail fast); if
the probe succeeds the breaker closes, if it fails the breaker opens again for twice as
long (up to ``max_cool_down_s``). A probe that never reports back (cancelled, hung) frees
the half-open slot after another cool-down, so the breaker cannot stick.

Only outages count as failures (the caller decides: connection errors and timeouts, not a
constraint violation or a domain error). The API keeps one breaker per dependency
(PostgreSQL, the Kafka producer; Redis has one per node inside ``core/inventory_link.py``);
their states are in ``/readyz`` and in ``ticketbuster_breaker_state{dependency}``
(0 closed, 1 half-open, 2 open) and ``ticketbuster_breaker_opened_total{dependency}``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from prometheus_client import Counter, Gauge

from core.errors import Unavailable

BREAKER_STATE = Gauge(
    "ticketbuster_breaker_state",
    "Circuit breaker per dependency: 0 closed, 1 half-open, 2 open.",
    ["dependency"],
    multiprocess_mode="max",
)
BREAKER_OPENED = Counter(
    "ticketbuster_breaker_opened_total",
    "Times a dependency's circuit breaker opened.",
    ["dependency"],
)

CLOSED: Final = "closed"
HALF_OPEN: Final = "half_open"
OPEN: Final = "open"
_LEVEL: Final = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class Breaker:
    """See the module docstring. Not thread-safe: one per event loop (per process)."""

    def __init__(
        self,
        dependency: str,
        *,
        threshold: int = 5,
        cool_down_s: float = 2.0,
        max_cool_down_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.dependency = dependency
        self.threshold = max(1, threshold)
        self.base_cool_down_s = cool_down_s
        self.max_cool_down_s = max(cool_down_s, max_cool_down_s)
        self.clock = clock
        self.failures = 0
        self.cool_down_s = cool_down_s
        self.open_until = 0.0
        self.probe_until = 0.0  # a probe is in flight until then
        self._gauge = BREAKER_STATE.labels(dependency)
        self._opened = BREAKER_OPENED.labels(dependency)
        self._gauge.set(0)

    @property
    def state(self) -> str:
        if self.failures < self.threshold:
            return CLOSED
        return OPEN if self.clock() < self.open_until else HALF_OPEN

    def check(self) -> None:
        """Before a call: raise ``Unavailable`` while open (or while a probe is out)."""
        if self.failures < self.threshold:
            return
        now = self.clock()
        if now < self.open_until:
            raise self._refusal(self.open_until - now)
        if now < self.probe_until:
            raise self._refusal(self.probe_until - now)
        self.probe_until = now + self.cool_down_s  # this call is the probe
        self._gauge.set(_LEVEL[HALF_OPEN])

    def success(self) -> None:
        if self.failures:
            self.failures = 0
            self.cool_down_s = self.base_cool_down_s
            self.probe_until = 0.0
            self._gauge.set(_LEVEL[CLOSED])

    def failure(self) -> None:
        if self.failures >= self.threshold:
            if self.probe_until:  # the probe failed: open again, for longer
                self.cool_down_s = min(self.cool_down_s * 2, self.max_cool_down_s)
                self._open()
            return  # a call that began before the breaker opened: already counted
        self.failures += 1
        if self.failures >= self.threshold:
            self._open()

    def _open(self) -> None:
        self.open_until = self.clock() + self.cool_down_s
        self.probe_until = 0.0
        self._opened.inc()
        self._gauge.set(_LEVEL[OPEN])

    def _refusal(self, wait_s: float) -> Unavailable:
        return Unavailable(
            f"{self.dependency} is unavailable (circuit open); retry shortly",
            retry_after_s=max(1, math.ceil(wait_s)),
        )


def pg_outages() -> tuple[type[BaseException], ...]:
    """The errors that say PostgreSQL is unreachable (not that a query is wrong)."""
    import asyncpg

    return (
        OSError,
        TimeoutError,
        asyncpg.exceptions.PostgresConnectionError,
        asyncpg.exceptions.CannotConnectNowError,
        asyncpg.exceptions.TooManyConnectionsError,
        asyncpg.exceptions.InterfaceError,
    )


class GuardedPool:
    """An asyncpg pool behind a ``Breaker``: ``fetch``/``fetchrow``/``fetchval``/``execute``
    and ``acquire()`` fail fast while PostgreSQL is known to be away. Everything else is
    the pool's own (``close``, ``terminate``, sizes)."""

    def __init__(self, pool: Any, breaker: Breaker) -> None:
        self._pool = pool
        self.breaker = breaker
        self._outages = pg_outages()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.breaker.check()
        try:
            result = await getattr(self._pool, method)(*args, **kwargs)
        except self._outages:
            self.breaker.failure()
            raise
        self.breaker.success()
        return result

    async def fetch(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("fetch", *args, **kwargs)

    async def fetchrow(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("fetchrow", *args, **kwargs)

    async def fetchval(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("fetchval", *args, **kwargs)

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        return await self._call("execute", *args, **kwargs)

    @contextlib.asynccontextmanager
    async def acquire(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        self.breaker.check()
        try:
            async with self._pool.acquire(*args, **kwargs) as conn:
                yield conn
        except self._outages:
            self.breaker.failure()
            raise
        self.breaker.success()
