"""pytest-benchmark: what the API's edge costs per request.

Token verification (first time and remembered), problem rendering, one rate-limit check
on the real Redis Cluster, and a whole request through the app's outer layers (in
process, no socket) with and without the limiter, beside bare Litestar.

Marked ``bench``; nothing is asserted about time. Each benchmark checks its result, so a
broken path cannot pass as a fast one. With ``--benchmark-disable`` (the default) each
runs once as a test.

Run: ``uv run pytest tests/benchmarks/test_api_edge_bench.py --benchmark-enable -q``
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import httpx
import pytest
from litestar import Litestar, get
from redis.asyncio.cluster import ClusterNode, RedisCluster

from api.app import create_app
from api.auth.dev_issuer import DevIssuer, new_private_jwk
from api.auth.tokens import JwksCache, TokenVerifier
from api.errors import build_problem
from api.ratelimit import RateLimiter
from core.errors import SeatUnavailable
from core.settings import AuthSettings, Settings
from tests.integration.api_servers import with_overrides

pytestmark = pytest.mark.bench

T = TypeVar("T")
AUTH = AuthSettings()


@get("/api/v1/bench/empty", sync_to_thread=False)
def empty() -> dict[str, int]:
    return {"ok": 1}


class Loop:
    """A private event loop: pytest-benchmark calls plain functions."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    env = Loop()
    yield env
    env.loop.close()


def _verifier(cache_size: int) -> tuple[TokenVerifier, str]:
    dev = DevIssuer(AUTH, new_private_jwk())

    async def keys() -> dict[str, Any]:
        return dev.jwks()

    token, _ = dev.issue("bench-buyer", roles=["buyer"])
    return TokenVerifier(AUTH, JwksCache(keys), cache_size=cache_size), token


def test_bench_verify_token_signature(benchmark: Any, loop: Loop) -> None:
    verifier, token = _verifier(cache_size=0)  # every call checks the Ed25519 signature
    principal = benchmark(lambda: loop.run(verifier.verify(token)))
    assert principal.sub == "bench-buyer"


def test_bench_verify_token_remembered(benchmark: Any, loop: Loop) -> None:
    verifier, token = _verifier(cache_size=16)
    loop.run(verifier.verify(token))
    principal = benchmark(lambda: loop.run(verifier.verify(token)))
    assert principal.sub == "bench-buyer"


def test_bench_render_problem(benchmark: Any) -> None:
    exc = SeatUnavailable("2 seats are taken", seats=["101-C-14", "101-C-15"])
    status, body, _ = benchmark(lambda: build_problem(exc, instance="/api/v1/events/1/holds"))
    assert status == 409 and body["seats"] == ["101-C-14", "101-C-15"]


def test_bench_rate_limit_check(benchmark: Any, loop: Loop, services: dict[str, str]) -> None:
    nodes = [
        ClusterNode(h, int(p))
        for h, _, p in (n.rpartition(":") for n in services["TB_REDIS_CLUSTER_NODES"].split(","))
    ]
    client = RedisCluster(startup_nodes=nodes, decode_responses=False)
    limiter = RateLimiter(client, namespace=f"tb:rl:bench:{uuid.uuid4().hex}")
    ident = uuid.uuid4().hex
    try:
        decision = benchmark(lambda: loop.run(limiter.hit("user", ident, 10**9, 60)))
        assert decision.allowed
    finally:
        loop.run(client.aclose())


class _Lifespan:
    """Runs an ASGI app's lifespan on the benchmark loop."""

    def __init__(self, app: Any, loop: Loop) -> None:
        self.app, self.loop = app, loop
        self.inbox: asyncio.Queue[dict[str, str]] = asyncio.Queue()
        self.outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def start(self) -> None:
        async def receive() -> dict[str, str]:
            return await self.inbox.get()

        async def send(message: dict[str, Any]) -> None:
            await self.outbox.put(message)

        scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
        self.task = self.loop.loop.create_task(self.app(scope, receive, send))
        self.loop.run(self.inbox.put({"type": "lifespan.startup"}))
        assert self.loop.run(self.outbox.get())["type"] == "lifespan.startup.complete"

    def stop(self) -> None:
        self.loop.run(self.inbox.put({"type": "lifespan.shutdown"}))
        self.loop.run(self.outbox.get())


def _request_bench(benchmark: Any, loop: Loop, app: Any, headers: dict[str, str]) -> None:
    client = httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=("198.18.0.1", 1)), base_url="http://x"
    )
    try:
        response = benchmark(lambda: loop.run(client.get("/api/v1/bench/empty", headers=headers)))
        assert response.status_code == 200 and response.json() == {"ok": 1}
    finally:
        loop.run(client.aclose())


@pytest.mark.parametrize("limiter", ["limiter on", "limiter off"])
def test_bench_request_through_the_edge(
    benchmark: Any, loop: Loop, settings: Settings, limiter: str
) -> None:
    s = with_overrides(
        settings,
        api={
            "rate_limit_enabled": limiter == "limiter on",
            "rate_limit_per_user": 10**9,
            "rate_limit_per_ip": 10**9,
        },
    )
    app = create_app(s, extra_route_handlers=[empty])
    lifespan = _Lifespan(app, loop)
    lifespan.start()
    try:
        token, _ = app.state.dev_issuer.issue("bench-buyer", roles=["buyer"])
        _request_bench(benchmark, loop, app, {"Authorization": f"Bearer {token}"})
    finally:
        lifespan.stop()


def test_bench_request_bare_litestar(benchmark: Any, loop: Loop) -> None:
    _request_bench(benchmark, loop, Litestar([empty]), {})
