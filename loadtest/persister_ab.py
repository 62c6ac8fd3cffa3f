"""A/B of the persister worker: ``python -m workers.persister`` from two source trees, in turns.

    uv run python -m loadtest.persister_ab /path/to/clone/of/the/tree/before [--rounds 3]

The first tree is this one. Each turn is the bench's persister measurement (loadtest/bench.py,
``run_persister``'s worker part): the same ``--orders`` orders of 6 seats, confirmed in Redis
as the API leaves them and put in a fresh ``orders.placed`` topic, drained by a persister
process started from that tree; steady tickets/s from the first ticket row to the last, the
drain time from the start of the process, and its CPU. The trees alternate which goes first
in each round, so drift on a shared machine falls on both. Reported per tree: the medians,
every round, and the ratio to the first tree per round.

Loopback only, bounded (rounds x trees x ``--cap`` seconds), cleans up its database
(``<db>_bench_ab``), topics and inventory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from loadtest import bench as b


async def empty_orders(dsn: str) -> None:
    import asyncpg

    if not dsn.endswith("_ab"):
        raise RuntimeError(f"refusing to empty the order tables of {dsn}: not an A/B database")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "TRUNCATE orders.checkins, orders.tickets, orders.idempotency_keys, orders.orders"
        )
    finally:
        await conn.close()


def drain(
    name: str,
    root: Path,
    env: dict[str, str],
    orders: list[Any],
    event: tuple[int, Any],
    cap_s: int,
) -> tuple[float | None, float | None, float]:
    """One turn: backlog in a fresh topic, one persister from ``root``; (steady, drain s, CPU s)."""
    from core.settings import load_settings

    event_id, seats = event
    env = {**env, "TB_KAFKA_TOPIC_PREFIX": f"ab{secrets.token_hex(3)}."}
    settings = load_settings(env)
    dsn = env["TB_DATABASE_URL"]
    asyncio.run(empty_orders(dsn))
    asyncio.run(b.reset_inventory(settings, event_id, seats))
    confirmed = asyncio.run(b.confirm_in_redis(settings, orders))
    asyncio.run(b.produce_orders(settings, confirmed))
    tickets = sum(len(o.seats) for o in orders)
    proc = b.Proc(
        f"persister-ab-{name.replace('/', '_')}",
        [sys.executable, "-m", "workers.persister"],
        {**env, "TB_WORKERS_PERSISTER_PORT": str(b.free_port()), "PYTHONPATH": str(root)},
        b.ROOT / ".tb" / "bench-ab" / "logs",
        cwd=root,
    )
    started = time.monotonic()
    try:
        drained_s, _n, trace = asyncio.run(
            b.wait_for_tickets(dsn, event_id, tickets, cap_s, started)
        )
        cpu = proc.cpu_s()
    finally:
        proc.stop()
        asyncio.run(b.delete_topics(settings))
    moving = [(t, n) for t, n in trace if n > 0]
    steady = None
    if len(moving) >= 2 and moving[-1][0] > moving[0][0]:
        (t0, n0), (t1, n1) = moving[0], moving[-1]
        steady = (n1 - n0) / (t1 - t0)
    return steady, drained_s, cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.persister_ab", description=__doc__)
    parser.add_argument("trees", nargs="+", type=Path, help="source trees to compare with this")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--orders", type=int, default=10_000)
    parser.add_argument("--cap", type=int, default=150, help="seconds one drain may take")
    args = parser.parse_args(argv)

    from core import devservices
    from core.settings import load_settings

    base_env = {**os.environ, **devservices.up()}
    dsn = b.bench_dsn(load_settings(base_env).database.url) + "_ab"
    env = {**base_env, "TB_ENV": "dev", "TB_DATABASE_URL": dsn}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    settings = load_settings(env)
    trees = {"this tree": b.ROOT, **{str(t): t.resolve() for t in args.trees}}
    asyncio.run(b.recreate_database(dsn))
    events = asyncio.run(b.seed_bench_events(dsn, settings, args.orders * 6))
    try:
        event_id = events.ids["persister"]
        seats = events.seats[event_id]
        prices = asyncio.run(b.event_prices(dsn, event_id))
        orders = b.synthetic_orders(event_id, seats, prices, 6, args.orders)
        runs: dict[str, list[tuple[float | None, float | None, float]]] = {n: [] for n in trees}
        names = list(trees)
        for round_no in range(args.rounds):
            turn = names if round_no % 2 == 0 else names[::-1]
            for name in turn:
                runs[name].append(
                    drain(name, trees[name], env, orders, (event_id, seats), args.cap)
                )
                steady, drained, cpu = runs[name][-1]
                b.log(
                    f"round {round_no + 1} {name}: steady {steady or 0:,.0f} tickets/s, "
                    f"drained in {drained or float('nan'):.1f} s, CPU {cpu:.1f} s"
                )
        first = names[0]
        print(f"\nload average now: {os.getloadavg()[0]:.2f}; {len(orders) * 6:,} tickets a drain")
        print("| tree | steady tickets/s (median) | drain s (median) | CPU s (median) | rounds |")
        print("|---|---|---|---|---|")
        for name in names:
            steady = [s or 0.0 for s, _, _ in runs[name]]
            drained = [d or float("nan") for _, d, _ in runs[name]]
            cpu = [c for _, _, c in runs[name]]
            print(
                f"| {name} | {statistics.median(steady):,.0f} | {statistics.median(drained):.1f} "
                f"| {statistics.median(cpu):.1f} | {', '.join(f'{s:,.0f}' for s in steady)} |"
            )
        for name in names[1:]:
            ratios = [
                (a[0] or 0.0) / (c[0] or 1.0) for a, c in zip(runs[first], runs[name], strict=True)
            ]
            print(
                f"\n{first} / {name}, steady tickets/s per round: "
                f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f})"
            )
    finally:
        asyncio.run(b.drop_inventory(settings, list(events.ids.values())))
        asyncio.run(b.drop_database(dsn))
    return 0


if __name__ == "__main__":
    sys.exit(main())
