"""The PostgreSQL breaker: the API stops calling a database that keeps failing.

The API (in-process, real lifespan) reaches the real PostgreSQL through a TCP relay this
test can cut and restore, so the outage is a real one for asyncpg: dropped connections,
then refused ones. (The Kafka breaker's test is in test_order_outcomes.py, on a paused
broker; each Redis node's breaker is in core/inventory_link.py and its tests.)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from core.settings import Settings
from tests.integration.api_servers import api_client, with_overrides

pytestmark = pytest.mark.slow


class Relay:
    """127.0.0.1:<port> -> PostgreSQL, on an event loop of its own thread (the test client
    runs the app on another loop); ``cut()`` drops every connection and refuses new ones,
    ``restore()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.pipes: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def _do(self, coro: Any) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def restore(self) -> None:
        self._do(self._restore())

    def cut(self) -> None:
        self._do(self._cut())

    def close(self) -> None:
        if self.server is not None:
            self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)

    async def _restore(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        self.server = None
        for writer in list(self.pipes):
            writer.transport.abort()
        self.pipes.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.pipes.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


async def test_a_database_that_keeps_failing_opens_the_breaker_and_it_closes_again(
    settings: Settings, pg_dsn: str
) -> None:
    parts = urlsplit(pg_dsn)
    relay = Relay((parts.hostname or "127.0.0.1", parts.port or 5432))
    relay.restore()
    relayed = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{relay.port}"))
    try:
        config = with_overrides(
            settings, database={"url": relayed}, api={"rate_limit_enabled": False}
        )
        async with api_client(config) as http:
            r = await http.post(
                "/api/v1/auth/dev-token", json={"sub": f"pg-{uuid.uuid4().hex[:8]}"}
            )
            me = {"Authorization": f"Bearer {r.json()['access_token']}"}
            ok = await http.get("/api/v1/me/orders", headers=me)
            assert ok.status_code == 200, ok.text

            relay.cut()
            failed = [await http.get("/api/v1/me/orders", headers=me) for _ in range(5)]
            assert [f.status_code for f in failed] == [503] * 5, [f.text for f in failed]
            attempts = relay.accepted
            refused = await http.get("/api/v1/me/orders", headers=me)
            assert refused.status_code == 503, refused.text
            assert "circuit open" in refused.json()["detail"]
            assert int(refused.headers["retry-after"]) >= 1
            assert relay.accepted == attempts  # failed fast: PostgreSQL was not even tried
            ready = (await http.get("/readyz")).json()
            assert ready["breakers"]["postgres"] in ("open", "half_open"), ready

            relay.restore()
            await asyncio.sleep(2.5)  # the breaker's first cool-down (2 s)
            probe = await http.get("/api/v1/me/orders", headers=me)
            assert probe.status_code == 200, probe.text
            ready = (await http.get("/readyz")).json()
            assert ready["breakers"]["postgres"] == "closed", ready
    finally:
        relay.close()
