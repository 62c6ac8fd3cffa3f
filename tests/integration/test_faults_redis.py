"""Redis faults during a sale at load: the event's primary SIGKILLed (its replica promoted),
a forced ``CLUSTER FAILOVER``, and the primary paused past the client timeout.

Everything runs on the rig's own servers (``tests/integration/fault_rig.py``): a private
Redis Cluster with replicas, broker and the real API and worker processes. The figures
each test prints (``FAULT ...`` lines, also appended to ``.tb/faults.log``) are the ones
in docs/RELIABILITY.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.integration.fault_rig import HOST, Rig, Sale, report, rig, run_sale, verdict

pytestmark = pytest.mark.slow

SALE_S = 10.0
FAULT_AFTER_S = 3.0


@pytest.fixture(scope="module")
def sale_rig() -> Iterator[Rig]:
    with rig(slot=0, capacity=6_000) as r:
        yield r


def _redis(r: Rig, port: int, *args: str) -> str:
    from core import devservices

    return devservices._redis_cli(port, *args)


def _promoted(r: Rig, replica: int) -> bool:
    return "role:master" in _redis(r, replica, "info", "replication")


async def _wait_for(check: object, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if await asyncio.to_thread(check):  # type: ignore[arg-type]
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout_s}s")


def _confirms_kept(r: Rig, sale: Sale, before_s: float) -> tuple[int, int]:
    """Of the 202s answered before ``before_s``: (how many, how many the new primary lost),
    a lost confirm being a seat that reads free or merely held again."""
    from core.inventory import Inventory
    from tests.integration.catalog_seed import cluster_client

    async def statuses() -> dict[str, str]:
        client = cluster_client(r.env["TB_REDIS_CLUSTER_NODES"])
        try:
            _, seats = await Inventory(client, r.settings.holds).seat_statuses(r.event_id)
        finally:
            await client.aclose()
        return {s: str(v) for s, v in seats.items()}

    now = asyncio.run(statuses())
    early = [oid for oid, at in sale.accepted_at.items() if at <= before_s]
    lost = [oid for oid in early if now.get(sale.accepted[oid]) not in ("sold", "pending")]
    return len(early), len(lost)


def _assert_sale_kept_its_promises(r: Rig, sale: Sale, name: str, **extra: object) -> None:
    v = asyncio.run(verdict(r, sale))
    report(name, sale, v, **extra)
    assert sale.accepted, "the sale accepted no order: nothing was tested"
    assert v.oversold == 0
    assert v.undecided == 0, f"{v.undecided} accepted orders were never decided"
    assert not any(a.hung for a in sale.answers), "a request got no answer in time"
    # Every refusal under the fault is a 503 that says when to come back.
    for a in sale.answers:
        assert a.status in (201, 202, 409, 503, 404, 410), a
        if a.status == 503:
            assert a.retry_after is not None, a
    assert sale.recovery_s("hold") is not None, "holds never came back after the fault"


def test_a_primary_killed_mid_sale_loses_no_accepted_order(sale_rig: Rig) -> None:
    r = sale_rig
    primary = r.primary_of_event()
    replica = r.replica_of(primary)
    promoted_in: list[float] = []

    async def kill(sale: Sale) -> None:
        await asyncio.sleep(FAULT_AFTER_S)
        r.kill_redis(primary)
        sale.mark_fault()
        promoted_in.append(await _wait_for(lambda: _promoted(r, replica), 30))
        sale.mark_fault_end()

    sale = asyncio.run(run_sale(r, SALE_S, kill))
    assert sale.fault_at is not None
    early, lost = _confirms_kept(r, sale, sale.fault_at)
    r.restart_redis(primary)
    _assert_sale_kept_its_promises(
        r,
        sale,
        "redis-primary-sigkill",
        promoted_in_s=round(promoted_in[0], 2),
        confirms_before_kill=early,
        confirms_lost=lost,
    )
    assert r.primary_of_event() == replica


def test_a_forced_failover_mid_sale_loses_no_accepted_order(sale_rig: Rig) -> None:
    r = sale_rig
    primary = r.primary_of_event()
    replica = r.replica_of(primary)
    promoted_in: list[float] = []

    async def failover(sale: Sale) -> None:
        await asyncio.sleep(FAULT_AFTER_S)
        sale.mark_fault()
        out = await asyncio.to_thread(_redis, r, replica, "cluster", "failover")
        assert "OK" in out, out
        promoted_in.append(await _wait_for(lambda: _promoted(r, replica), 30))
        sale.mark_fault_end()

    sale = asyncio.run(run_sale(r, SALE_S, failover))
    assert sale.fault_at is not None
    early, lost = _confirms_kept(r, sale, sale.fault_at)
    _assert_sale_kept_its_promises(
        r,
        sale,
        "redis-cluster-failover",
        promoted_in_s=round(promoted_in[0], 2),
        confirms_before_failover=early,
        confirms_lost=lost,
    )
    # A forced failover waits for the replica to catch up: nothing accepted is lost.
    assert lost == 0
    assert r.primary_of_event() == replica


def _local_decisions(r: Rig) -> float:
    text = httpx.get(f"http://{HOST}:{r.api_port}/metrics", timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("ticketbuster_ratelimit_local_decisions_total"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_a_paused_primary_answers_503_fast_and_never_hangs(sale_rig: Rig) -> None:
    """CLIENT PAUSE longer than the client timeout (2 s): holds of the paused shard answer
    503 + Retry-After once the link's watchdog fires, then at once (breaker open); none
    waits for the pause to end. The rate limiter decides locally, for a bounded time."""
    r = sale_rig
    pause_ms = 10_000
    primary = r.primary_of_event()
    samples: list[tuple[float, float]] = []

    async def pause(sale: Sale) -> None:
        await asyncio.sleep(FAULT_AFTER_S)
        samples.append((sale.now(), await asyncio.to_thread(_local_decisions, r)))
        out = await asyncio.to_thread(_redis, r, primary, "client", "pause", str(pause_ms), "ALL")
        assert "OK" in out, out
        sale.mark_fault()
        end = time.monotonic() + pause_ms / 1000 + 8
        while time.monotonic() < end:
            with contextlib.suppress(httpx.HTTPError):
                samples.append((sale.now(), await asyncio.to_thread(_local_decisions, r)))
            await asyncio.sleep(0.25)
        sale.mark_fault_end()

    # A request that waited for the pause to end would outlast the client's 6 s: hung. The
    # sale goes on 6 s past the pause, so that holds coming back is seen (the breaker
    # half-opens, the link reconnects) on a loaded machine too.
    lasts = FAULT_AFTER_S + pause_ms / 1000 + 6
    sale = asyncio.run(run_sale(r, lasts, pause, client_timeout_s=6.0))
    assert sale.fault_at is not None
    paused = (sale.fault_at, sale.fault_at + pause_ms / 1000)
    during = [a for a in sale.answers if a.kind == "hold" and paused[0] <= a.at <= paused[1]]
    shed = [a for a in during if a.status == 503]
    slowest = max((a.elapsed for a in during), default=0.0)
    rising = [t for (t, n), (_, m) in itertools.pairwise(samples) if m > n]
    window = (max(rising) - min(rising) + 0.25) if rising else 0.0
    _assert_sale_kept_its_promises(
        r,
        sale,
        "redis-client-pause",
        pause_ms=pause_ms,
        holds_during=len(during),
        holds_503_during=len(shed),
        slowest_hold_during_s=round(slowest, 2),
        limiter_local_decisions=int(samples[-1][1] - samples[0][1]),
        limiter_local_window_s=round(window, 2),
    )
    assert shed, "no hold was refused while its shard was paused"
    # The limiter fell back to local decisions, and only for a bounded time.
    assert samples[-1][1] > samples[0][1]
    assert window < pause_ms / 1000 + 8


def test_with_the_replica_wait_a_killed_primary_keeps_every_confirm(sale_rig: Rig) -> None:
    """``TB_REDIS_CONFIRM_WAIT_MS`` on: the same SIGKILL, for the figures of decision 0806
    (the cost per order beside the confirms the kill loses)."""
    r = sale_rig
    r.procs["api"].stop()
    r.start("api", {"TB_REDIS_CONFIRM_WAIT_MS": "50"})
    try:
        primary = r.primary_of_event()
        replica = r.replica_of(primary)

        async def kill(sale: Sale) -> None:
            await asyncio.sleep(FAULT_AFTER_S)
            r.kill_redis(primary)
            sale.mark_fault()
            await _wait_for(lambda: _promoted(r, replica), 30)
            sale.mark_fault_end()

        sale = asyncio.run(run_sale(r, SALE_S, kill))
        assert sale.fault_at is not None
        early, lost = _confirms_kept(r, sale, sale.fault_at)
        r.restart_redis(primary)
        _assert_sale_kept_its_promises(
            r,
            sale,
            "redis-primary-sigkill-with-wait-50ms",
            confirms_before_kill=early,
            confirms_lost=lost,
        )
        assert lost == 0
    finally:
        r.procs["api"].stop()
        r.start("api")
