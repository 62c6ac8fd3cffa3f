"""The purchase path when the outcome is unknown: a stalled broker, an API that dies.

A PRIVATE Tansu broker on a free port (the shared one is never paused): one test stops it
(SIGSTOP) for longer than the producer's timeout during ``POST /orders`` and checks that
the buyer's answer and the order's final state agree; another runs the API as a real
Granian process with a fault point on, so it dies after recording the order and before
answering, and checks that the retry with the same Idempotency-Key gets that order.

The final state is decided by the persister's own ``decide_and_write`` over what really
reached the broker (no persister process runs here).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec
import pytest

from core import devservices
from core.inventory import partition_keys
from core.orders import OrderPlaced
from core.settings import Settings
from tests.integration.api_servers import (
    GranianServer,
    api_client,
    free_port,
    with_overrides,
)
from tests.integration.catalog_seed import cluster_client, seed_test_event
from tests.integration.test_orders_support import TopicReader
from workers.expirer import Reconciler
from workers.persister import decide_and_write
from workers.runtime import create_broker, ensure_topics

pytestmark = pytest.mark.slow

RUN = uuid.uuid4().hex[:8]
STALL_S = 7.0  # longer than the producer's 5 s request timeout


@pytest.fixture(scope="module")
def private_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    """A Tansu broker of this module's own: (bootstrap, pid). Stopped by its pid."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("tansu") / "tansu.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                devservices._tansu_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 20
        while not devservices._kafka_healthy(port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "private Tansu did not start"
            time.sleep(0.1)
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


class World(msgspec.Struct):
    settings: Any
    event_id: int
    seats: list[str]
    redis: Any
    pool: Any


@pytest.fixture(scope="module")
async def world(
    db_settings: Settings, pg_dsn: str, services: dict[str, str], private_broker: tuple[str, int]
) -> AsyncIterator[World]:
    bootstrap, _ = private_broker
    settings = with_overrides(
        db_settings,
        kafka={"bootstrap": bootstrap},
        api={"rate_limit_enabled": False},
        workers={"reconcile_grace_s": 0.0},
    )
    await ensure_topics(settings)
    redis = cluster_client(services["TB_REDIS_CLUSTER_NODES"])
    await redis.initialize()
    event_id, seats = await seed_test_event(
        pg_dsn,
        redis,
        name="Unknown outcomes",
        address="Loopback 19",
        days_ahead=20,
        base_price_minor=5_000,
        capacity=40,
    )
    pool = await asyncpg.create_pool(pg_dsn, min_size=1, max_size=2)
    assert pool is not None
    try:
        yield World(
            settings=settings, event_id=event_id, seats=sorted(seats), redis=redis, pool=pool
        )
    finally:
        await pool.close()
        for key in partition_keys(event_id, 0):
            await redis.delete(key)
        await redis.aclose()


_used: set[str] = set()


def _take(w: World, n: int) -> list[str]:
    seats = [s for s in w.seats if s not in _used][:n]
    _used.update(seats)
    return seats


async def _auth(http: Any, sub: str) -> dict[str, str]:
    r = await http.post("/api/v1/auth/dev-token", json={"sub": sub})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}


async def _hold(http: Any, w: World, headers: dict[str, str], seats: list[str]) -> str:
    r = await http.post(
        f"/api/v1/events/{w.event_id}/holds", json={"seats": seats}, headers=headers
    )
    assert r.status_code == 201, r.text
    return str(r.json()["hold_id"])


async def _placed_on_broker(w: World, order_id: str, timeout_s: float) -> OrderPlaced | None:
    placed = w.settings.kafka.topic_prefix + "orders.placed"
    async with TopicReader(w.settings.kafka.bootstrap, [placed]) as reader:
        with contextlib.suppress(AssertionError):
            messages = await reader.wait_for(
                lambda m: any(d.get("order_id") == order_id for _, d in m), timeout_s
            )
            doc = next(d for _, d in messages if d.get("order_id") == order_id)
            return msgspec.convert(doc, OrderPlaced)
    return None


async def _final_status(w: World, order_id: str) -> str | None:
    """What the persister decides for the order, given what reached the broker.

    None: the order never reached the broker, even after a reconcile pass (which
    re-publishes a stuck pending order from the buyer's record).
    """
    order = await _placed_on_broker(w, order_id, 10)
    if order is None:
        broker = create_broker(w.settings, "outcomes-reconciler")
        await broker.connect()
        try:
            await Reconciler(w.settings, broker, w.pool, w.redis).reconcile([(w.event_id, 0)])
        finally:
            await broker.stop()
        order = await _placed_on_broker(w, order_id, 10)
    if order is None:
        return None
    async with w.pool.acquire() as conn, conn.transaction():
        decisions = await decide_and_write(conn, [order])
    return decisions[0].status


async def test_a_stalled_broker_gives_an_answer_the_final_state_agrees_with(
    world: World, private_broker: tuple[str, int]
) -> None:
    w = world
    _, broker_pid = private_broker
    async with api_client(w.settings) as http:
        ana = await _auth(http, f"ana-stall-{RUN}")
        # A first order on a healthy broker (the producer learns the topic's metadata).
        warm = await http.post(
            "/api/v1/orders",
            json={"hold_id": await _hold(http, w, ana, _take(w, 1))},
            headers={**ana, "Idempotency-Key": uuid.uuid4().hex},
        )
        assert warm.status_code == 202, warm.text

        seats = _take(w, 2)
        hold_id = await _hold(http, w, ana, seats)
        key = uuid.uuid4().hex
        os.kill(broker_pid, signal.SIGSTOP)
        try:
            request = asyncio.ensure_future(
                http.post(
                    "/api/v1/orders",
                    json={"hold_id": hold_id},
                    headers={**ana, "Idempotency-Key": key},
                    timeout=60,
                )
            )
            await asyncio.sleep(STALL_S)
        finally:
            os.kill(broker_pid, signal.SIGCONT)
        answer = await request

        # The publish's outcome was unknown: the order is kept pending, not undone.
        assert answer.status_code == 202, answer.text
        order_id = answer.json()["order_id"]
        view = await http.get(f"/api/v1/orders/{order_id}", headers=ana)
        assert view.json()["status"] == "pending"
        # Its seats stay out of reach of the next buyer (no 202 that must be taken back).
        ben = await _auth(http, f"ben-stall-{RUN}")
        taken = await http.post(
            f"/api/v1/events/{w.event_id}/holds", json={"seats": seats}, headers=ben
        )
        assert taken.status_code == 409, taken.text
        # The same key replays the same answer.
        replay = await http.post(
            "/api/v1/orders", json={"hold_id": hold_id}, headers={**ana, "Idempotency-Key": key}
        )
        assert (replay.status_code, replay.json()["order_id"]) == (202, order_id)

    assert await _final_status(w, order_id) == "confirmed"


async def test_a_retry_after_the_api_died_before_replying_gets_that_order(
    world: World, tmp_path: Path
) -> None:
    w = world
    settings = with_overrides(w.settings, kafka={"request_timeout_s": 1.0})
    buyer = f"cy-crash-{RUN}"
    seats = _take(w, 2)
    key = uuid.uuid4().hex
    crashing = GranianServer(
        settings, tmp_path / "api-crash.log", {"TB_FAULTS_CRASH_AFTER_PENDING_RECORD": "true"}
    )
    try:
        crashing.wait_ready()
        async with httpx.AsyncClient(base_url=crashing.base_url, timeout=30) as http:
            cy = await _auth(http, buyer)
            hold_id = await _hold(http, w, cy, seats)
            with pytest.raises(httpx.TransportError):
                await http.post(
                    "/api/v1/orders",
                    json={"hold_id": hold_id},
                    headers={**cy, "Idempotency-Key": key},
                )
    finally:
        crashing.stop()
    assert "fault point crash_after_pending_record reached" in crashing.log_path.read_text()

    server = GranianServer(settings, tmp_path / "api.log")
    try:
        server.wait_ready()
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            cy = await _auth(http, buyer)
            statuses = []
            answer = None
            for _ in range(10):
                answer = await http.post(
                    "/api/v1/orders",
                    json={"hold_id": hold_id},
                    headers={**cy, "Idempotency-Key": key},
                )
                statuses.append(answer.status_code)
                if answer.status_code != 409:
                    break
                # The dead attempt's claim is still leased: "in progress", with Retry-After.
                assert answer.headers["content-type"].startswith("application/problem+json")
                await asyncio.sleep(int(answer.headers["Retry-After"]))
            assert answer is not None and answer.status_code == 202, (statuses, answer.text)
            order_id = answer.json()["order_id"]
            # The one order the buyer has is the one the dead attempt recorded.
            mine = (await http.get("/api/v1/me/orders", headers=cy)).json()["items"]
            assert [(o["order_id"], o["status"]) for o in mine] == [(order_id, "pending")]
            assert sorted(s["seat_id"] for s in mine[0]["seats"]) == sorted(seats)
    finally:
        server.stop()

    assert await _final_status(w, order_id) == "confirmed"


async def test_a_broker_that_keeps_failing_opens_the_breaker_and_it_closes_again(
    world: World, private_broker: tuple[str, int]
) -> None:
    """Five publishes in a row that time out open the Kafka breaker: the next order gets
    503 at once, before its hold is touched; once the broker is back and the cool-down
    has passed, one order goes through as the probe and the breaker closes."""
    w = world
    _, broker_pid = private_broker
    settings = with_overrides(w.settings, kafka={"request_timeout_s": 1.0})
    async with api_client(settings) as http:
        eve = await _auth(http, f"eve-breaker-{RUN}")
        fay = await _auth(http, f"fay-breaker-{RUN}")

        async def order(hold_id: str, who: dict[str, str] = eve) -> httpx.Response:
            return await http.post(
                "/api/v1/orders",
                json={"hold_id": hold_id},
                headers={**who, "Idempotency-Key": uuid.uuid4().hex},
                timeout=60,
            )

        warm = await order(await _hold(http, w, eve, _take(w, 1)))
        assert warm.status_code == 202, warm.text
        holds = [await _hold(http, w, eve, _take(w, 1)) for _ in range(5)]
        untouched = await _hold(http, w, fay, _take(w, 1))
        os.kill(broker_pid, signal.SIGSTOP)
        try:
            stalled = await asyncio.gather(*(order(h) for h in holds))
            # Unknown outcomes: kept pending (202), and each one counts against the broker.
            assert [r.status_code for r in stalled] == [202] * 5, [r.text for r in stalled]
            refused = await order(untouched, fay)
            assert refused.status_code == 503, refused.text
            assert "circuit open" in refused.json()["detail"]
            assert int(refused.headers["retry-after"]) >= 1
            # Refused before the hold was touched: it is still the buyer's.
            held = await http.get(f"/api/v1/holds/{untouched}", headers=fay)
            assert held.status_code == 200, held.text
            # /readyz shows it (open, or half-open once its 2 s cool-down has passed).
            ready = (await http.get("/readyz")).json()
            assert ready["breakers"]["kafka"] in ("open", "half_open"), ready
        finally:
            os.kill(broker_pid, signal.SIGCONT)
        await asyncio.sleep(2.5)  # the breaker's first cool-down (2 s)
        probe = await order(untouched, fay)
        assert probe.status_code == 202, probe.text
        ready = await http.get("/readyz")
        assert ready.json()["breakers"]["kafka"] == "closed", ready.text
