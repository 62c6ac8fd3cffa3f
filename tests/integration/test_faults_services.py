"""Faults of the broker, PostgreSQL and the workers during a sale at load.

On the rig's own servers (``tests/integration/fault_rig.py``), PostgreSQL included, since
one test restarts it: the broker stalled (SIGSTOP) for 10 s, the broker restarted (the
dev broker is memory-only, so a restart also loses its whole log and every committed
offset: harsher than a Kafka restart), PostgreSQL restarted while the persister writes,
and the persister, issuer and notifier each SIGKILLed and started again. Each time: no
202 lost (every one decided in PostgreSQL), 0 oversold, and the time to recover.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import msgspec
import pytest

from core.orders import user_events_key
from tests.integration.catalog_seed import cluster_client
from tests.integration.fault_rig import (
    Rig,
    Sale,
    report,
    rig,
    run_sale,
    undecided_detail,
    verdict,
)

pytestmark = pytest.mark.slow

SALE_S = 8.0
FAULT_AFTER_S = 3.0


@pytest.fixture(scope="module")
def sale_rig() -> Iterator[Rig]:
    with rig(slot=1, capacity=6_000, postgres=True) as r:
        yield r


def _kept_promises(r: Rig, sale: Sale, name: str, **extra: object) -> None:
    v = asyncio.run(verdict(r, sale, within_s=90))
    report(name, sale, v, **extra)
    assert sale.accepted, "the sale accepted no order: nothing was tested"
    assert v.oversold == 0
    if v.undecided:
        detail = "\n".join(asyncio.run(undecided_detail(r, sale)))
        raise AssertionError(f"{v.undecided} accepted orders were never decided:\n{detail}")
    assert v.decided.get("rejected", 0) == 0, v.rejected_reasons
    assert not any(a.hung for a in sale.answers), "a request got no answer in time"
    for a in sale.answers:
        assert a.status in (201, 202, 409, 503), a
        if a.status == 503:
            assert a.retry_after is not None, a


def test_the_broker_stalled_for_10_s_loses_no_accepted_order(sale_rig: Rig) -> None:
    r = sale_rig

    async def stall(sale: Sale) -> None:
        await asyncio.sleep(FAULT_AFTER_S)
        pid = r.broker_pid()
        os.kill(pid, signal.SIGSTOP)
        sale.mark_fault()
        try:
            await asyncio.sleep(10)
        finally:
            os.kill(pid, signal.SIGCONT)
        sale.mark_fault_end()

    sale = asyncio.run(run_sale(r, SALE_S + 8, stall))
    _kept_promises(r, sale, "broker-stalled-10s", order_recovery_s=_round(sale.recovery_s("order")))


def test_the_broker_restarted_mid_sale_loses_no_accepted_order(sale_rig: Rig) -> None:
    r = sale_rig
    restarted_in: list[float] = []

    async def restart(sale: Sale) -> None:
        await asyncio.sleep(FAULT_AFTER_S)
        sale.mark_fault()
        t0 = time.monotonic()
        await asyncio.to_thread(r.restart_broker)
        restarted_in.append(time.monotonic() - t0)
        sale.mark_fault_end()

    sale = asyncio.run(run_sale(r, SALE_S, restart))
    _kept_promises(
        r,
        sale,
        "broker-restarted",
        broker_back_in_s=_round(restarted_in[0]),
        order_recovery_s=_round(sale.recovery_s("order")),
    )


def test_postgres_restarted_mid_batch_loses_no_accepted_order(sale_rig: Rig) -> None:
    r = sale_rig

    async def restart(sale: Sale) -> None:
        await asyncio.sleep(FAULT_AFTER_S)
        sale.mark_fault()
        await asyncio.to_thread(r.restart_postgres, 2.0)
        sale.mark_fault_end()

    sale = asyncio.run(run_sale(r, SALE_S, restart))
    _kept_promises(r, sale, "postgres-restarted", order_recovery_s=_round(sale.recovery_s("order")))
    # Holds and orders need no PostgreSQL once the event is known (the catalog serves what
    # it has; the persister waits for the database): the restart is invisible to buyers.
    assert sale.statuses("hold").get(503, 0) == 0, sale.statuses("hold")
    assert sale.statuses("order").get(503, 0) == 0, sale.statuses("order")


def test_workers_killed_and_restarted_lose_nothing(sale_rig: Rig) -> None:
    """The persister, the issuer and the notifier SIGKILLed one after another mid-sale,
    each started again a second later: every 202 decided, every confirmed ticket issued,
    every decided order notified to its buyer."""
    r = sale_rig
    back_in: dict[str, float] = {}

    async def kills(sale: Sale) -> None:
        await asyncio.sleep(FAULT_AFTER_S)
        sale.mark_fault()
        for name in ("persister", "issuer", "notifier"):
            r.kill(name)
            await asyncio.sleep(1.0)
            t0 = time.monotonic()
            await asyncio.to_thread(r.start, name)
            back_in[name] = round(time.monotonic() - t0, 2)
        sale.mark_fault_end()

    sale = asyncio.run(run_sale(r, SALE_S, kills))
    _kept_promises(r, sale, "workers-killed", restarted_healthy_in_s=back_in)
    ids = list(sale.accepted)
    unissued, unnotified, took = asyncio.run(_issued_and_notified(r, ids, within_s=60))
    report(
        "workers-killed-after",
        sale,
        asyncio.run(verdict(r, sale, within_s=1)),
        unissued=unissued,
        unnotified=unnotified,
        issued_and_notified_in_s=_round(took),
    )
    assert unissued == 0, f"{unissued} confirmed tickets were never issued"
    assert unnotified == 0, f"{unnotified} decided orders were never notified"


async def _issued_and_notified(
    r: Rig, ids: list[str], within_s: float
) -> tuple[int, int, float | None]:
    client = cluster_client(r.env["TB_REDIS_CLUSTER_NODES"])
    started = time.monotonic()
    try:
        while True:
            unissued = (
                await r.fetch(
                    "SELECT count(*) AS n FROM orders.tickets"
                    " WHERE order_id = ANY($1::uuid[]) AND issued_at IS NULL",
                    ids,
                )
            )[0]["n"]
            rows = await r.fetch(
                "SELECT order_id::text AS order_id, buyer, status FROM orders.orders"
                " WHERE order_id = ANY($1::uuid[])",
                ids,
            )
            notified: set[tuple[str, str]] = set()
            for buyer in {row["buyer"] for row in rows}:
                for _, fields in await client.xrange(user_events_key(buyer)):
                    doc = msgspec.json.decode(fields[b"data"])
                    notified.add((doc.get("order_id"), doc.get("status")))
            unnotified = sum((row["order_id"], row["status"]) not in notified for row in rows)
            took = time.monotonic() - started
            if (unissued == 0 and unnotified == 0) or took > within_s:
                return int(unissued), unnotified, took if unissued == unnotified == 0 else None
            await asyncio.sleep(0.5)
    finally:
        await client.aclose()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
