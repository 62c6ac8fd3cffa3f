"""Load shedding: answer 503 + ``Retry-After`` instead of queueing without bound or hanging.

Two rules for ``/api/`` requests in one API process:

- at most ``TB_API_MAX_IN_FLIGHT`` requests at a time; the next one is refused at once
  (it costs nothing: no token check, no Redis, no database);
- a request whose response has not started after ``TB_API_REQUEST_TIMEOUT_S`` (a pool that
  never frees a connection, a stuck dependency, a client trickling its body) is cancelled
  and answered 503. Once a response has started it is never cut.

Both count in ``ticketbuster_requests_shed_total{reason}``.
"""

from __future__ import annotations

import asyncio

from litestar.config.cors import CORSConfig
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from api.edge import cors_headers
from api.errors import send_problem
from api.metrics import REQUESTS_SHED
from core.errors import Unavailable


class OverloadGuard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_in_flight: int,
        timeout_s: float,
        cors: CORSConfig | None = None,
        path_prefix: str = "/api/",
    ) -> None:
        self.app = app
        self.max_in_flight = max_in_flight
        self.timeout_s = timeout_s
        self.cors = cors
        self.path_prefix = path_prefix
        self.in_flight = 0

    async def _refuse(self, scope: Scope, send: Send, detail: str, reason: str) -> None:
        REQUESTS_SHED.labels(reason=reason).inc()
        await send_problem(
            send,
            Unavailable(detail, retry_after_s=1),
            instance=scope.get("path"),
            request_id=scope.get("state", {}).get("request_id"),
            extra_headers=cors_headers(scope, self.cors),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP or not scope.get("path", "").startswith(
            self.path_prefix
        ):
            await self.app(scope, receive, send)
            return
        if self.max_in_flight > 0 and self.in_flight >= self.max_in_flight:
            await self._refuse(scope, send, "The API is at capacity; retry shortly.", "capacity")
            return
        self.in_flight += 1
        try:
            if self.timeout_s <= 0:
                await self.app(scope, receive, send)
            else:
                await self._with_deadline(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _with_deadline(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        assert task is not None
        started = False
        timed_out = False

        async def send_tracking(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        def expire() -> None:
            nonlocal timed_out
            if not started:
                timed_out = True
                task.cancel()

        handle = asyncio.get_running_loop().call_later(self.timeout_s, expire)
        try:
            await self.app(scope, receive, send_tracking)
        except asyncio.CancelledError:
            if not timed_out:
                raise
            task.uncancel()
            await self._refuse(scope, send, "The request took too long; retry shortly.", "timeout")
        finally:
            handle.cancel()
