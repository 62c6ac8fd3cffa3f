"""Running the API for tests: in-process (ASGI client, real lifespan and servers) or as a
real Granian process on a free loopback port."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import msgspec
from litestar.testing import AsyncTestClient
from litestar.types import ControllerRouterHandler

from api.app import create_app
from core.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def with_overrides(settings: Settings, **sections: dict[str, Any]) -> Settings:
    """``with_overrides(s, api={"rate_limit_per_user": 5})`` -> a copy with those fields."""
    changes = {
        name: msgspec.structs.replace(getattr(settings, name), **fields)
        for name, fields in sections.items()
    }
    return msgspec.structs.replace(settings, **changes)


@contextlib.asynccontextmanager
async def api_client(
    settings: Settings,
    extra_route_handlers: Sequence[ControllerRouterHandler] = (),
    peer: tuple[str, int] | None = ("127.0.0.1", 50000),
) -> AsyncIterator[AsyncTestClient[Any]]:
    """The app in this process with its real lifespan (Redis Cluster, Postgres, Kafka).

    ``peer`` is the socket address the app sees (Litestar's test client says "testclient",
    which is not an address).
    """
    app = create_app(settings, extra_route_handlers=extra_route_handlers)
    if peer is not None:
        inner = app.asgi_handler

        async def with_peer(scope: Any, receive: Any, send: Any) -> None:
            scope["client"] = peer
            await inner(scope, receive, send)

        app.asgi_handler = with_peer
    async with AsyncTestClient(app, base_url="http://127.0.0.1:8000") as client:
        yield client


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def settings_env(settings: Settings) -> dict[str, str]:
    """TB_* variables that reproduce ``settings`` in another process."""
    env: dict[str, str] = {"TB_ENV": settings.env}
    for section in Settings.__struct_fields__:
        value = getattr(settings, section)
        if not isinstance(value, msgspec.Struct):
            continue
        for field in value.__struct_fields__:
            raw = getattr(value, field)
            env[f"TB_{section.upper()}_{field.upper()}"] = (
                str(raw).lower() if isinstance(raw, bool) else str(raw)
            )
    return env


class GranianServer:
    """``python -m api`` (Granian + uvloop) on a free port, stopped by its own pid."""

    def __init__(
        self,
        settings: Settings,
        log_path: Path,
        extra_env: dict[str, str] | None = None,
        port: int | None = None,
    ):
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TB_")}
        env.update(settings_env(settings))
        env.update(
            {"TB_API_HOST": "127.0.0.1", "TB_API_PORT": str(self.port), "TB_API_WORKERS": "1"}
        )
        env.update(extra_env or {})
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "api"],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"API not up in {timeout_s}s: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


@contextlib.contextmanager
def granian_server(
    settings: Settings,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
) -> Iterator[GranianServer]:
    server = GranianServer(settings, log_path, extra_env, port)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


class OneEventCatalog(msgspec.Struct):
    dsn: str
    event_id: int


async def _admin(dsn: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(urlunsplit(urlsplit(dsn)._replace(path="/postgres")))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def _seed_one_event(dsn: str, settings: Settings) -> int:
    from core.inventory import Inventory
    from migrations.runner import migrate
    from migrations.seed import read_csv, seed
    from tests.integration.catalog_seed import cluster_client, restart_event_ids

    await migrate(dsn)
    await restart_event_ids(dsn)
    smallest = min(read_csv(), key=lambda e: e.capacity)
    client = cluster_client(settings.redis.cluster_nodes)
    try:
        report = await seed(dsn, Inventory(client), [smallest])
    finally:
        await client.aclose()
    return int(report.created[0][0])


async def _drop_event_inventory(settings: Settings, event_id: int) -> None:
    from tests.integration.catalog_seed import cluster_client, drop_inventory

    client = cluster_client(settings.redis.cluster_nodes)
    try:
        await drop_inventory(client, [event_id])
    finally:
        await client.aclose()


@contextlib.contextmanager
def one_event_catalog(admin_dsn: str, settings: Settings) -> Iterator[OneEventCatalog]:
    """A database of its own (migrated by the real runner) holding the smallest seed event,
    its inventory loaded into the Redis Cluster; both removed afterwards. Synchronous, for
    module fixtures (it runs its own event loops)."""
    import asyncio

    name = f"tb_api_{secrets.token_hex(4)}"
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
    asyncio.run(_admin(admin_dsn, f'CREATE DATABASE "{name}"'))
    event_id: int | None = None
    try:
        event_id = asyncio.run(_seed_one_event(dsn, settings))
        yield OneEventCatalog(dsn=dsn, event_id=event_id)
    finally:
        if event_id is not None:
            asyncio.run(_drop_event_inventory(settings, event_id))
        asyncio.run(_admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@contextlib.asynccontextmanager
async def one_event_catalog_async(
    admin_dsn: str, settings: Settings
) -> AsyncIterator[OneEventCatalog]:
    """``one_event_catalog`` for async tests."""
    name = f"tb_api_{secrets.token_hex(4)}"
    dsn = urlunsplit(urlsplit(admin_dsn)._replace(path=f"/{name}"))
    await _admin(admin_dsn, f'CREATE DATABASE "{name}"')
    event_id: int | None = None
    try:
        event_id = await _seed_one_event(dsn, settings)
        yield OneEventCatalog(dsn=dsn, event_id=event_id)
    finally:
        if event_id is not None:
            await _drop_event_inventory(settings, event_id)
        await _admin(admin_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
