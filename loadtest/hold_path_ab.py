"""A/B of the hold path: the API served from two (or more) source trees, same servers.

    uv run python -m loadtest.hold_path_ab /path/to/patched/clone [/path/to/another]

The first tree is this one. Every tree's API runs at once (same bench database, same
event, same settings); the trees take turns, ``--rounds`` times, each turn a short warm-up
and a ``--seconds`` wrk run of holds by returning buyers (their tokens verified once), the
inventory reset before each. Reported per tree: the server's CPU per request (its median
over the rounds; the figure that matters on a shared machine) and holds/s.

For trying a hot-path change before proposing it to the owning area. Loopback only,
bounded (rounds x trees x seconds), cleans up its database and inventory.
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

from loadtest import bench as b


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.hold_path_ab", description=__doc__)
    parser.add_argument("trees", nargs="+", type=Path, help="source trees to compare with this")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args(argv)
    wrk = b.ensure_wrk()
    if wrk is None:
        sys.exit("wrk is missing")

    from core import devservices
    from core.settings import load_settings

    base_env = {**os.environ, **devservices.up()}
    dsn = b.bench_dsn(load_settings(base_env).database.url) + "_ab"
    tag = secrets.token_hex(3)
    env = {
        **base_env,
        "TB_ENV": "dev",
        "TB_AUTH_DEV_ISSUER_ENABLED": "true",
        "TB_DATABASE_URL": dsn,
        "TB_KAFKA_TOPIC_PREFIX": f"ab{tag}.",
        "TB_API_RATE_LIMIT_PER_IP": "1000000000",
        "TB_API_WORKERS": "1",
    }
    settings = load_settings(env)
    work = b.ROOT / ".tb" / "bench-ab"
    asyncio.run(b.recreate_database(dsn))
    events = asyncio.run(b.seed_bench_events(dsn, settings, 1000))
    event_id = events.ids["holds"]
    seats = events.seats[event_id]
    trees = {"this tree": b.ROOT, **{str(t): t.resolve() for t in args.trees}}
    servers: dict[str, tuple[b.Proc, str]] = {}
    try:
        tokens, _ = asyncio.run(b.mint_tokens(settings, f"ab-{tag}-", b.RETURNING_BUYERS))
        files = (
            b.write_lines(work / "tokens.txt", tokens),
            b.write_lines(work / "seats.txt", [s for s, _ in seats]),
        )
        for name, root in trees.items():
            port = b.free_port()
            proc = b.Proc(
                f"ab-{len(servers)}",
                [sys.executable, "-m", "api"],
                {**env, "TB_API_PORT": str(port), "PYTHONPATH": str(root)},
                work / "logs",
                cwd=root,
            )
            base = f"http://{b.HOST}:{port}"
            b.wait_until(lambda base=base: b.http_ok(base + "/healthz"), name, 90)
            servers[name] = (proc, base)
        cpu: dict[str, list[float]] = {n: [] for n in servers}
        rate: dict[str, list[float]] = {n: [] for n in servers}
        for round_no in range(args.rounds):
            for name, (proc, base) in servers.items():
                for seconds, record in ((2, False), (args.seconds, True)):
                    asyncio.run(b.reset_inventory(settings, event_id, seats))
                    run = b.run_wrk(
                        wrk, base, "holds.lua", [str(event_id), str(files[0]), str(files[1]), "0"],
                        connections=args.connections, duration_s=seconds, server=proc,
                        target=name,
                    )  # fmt: skip
                    if record:
                        cpu[name].append(1e6 * run.server_cpu_s / max(run.requests, 1))
                        rate[name].append(run.ok_per_s())
                b.log(f"round {round_no + 1} {name}: {cpu[name][-1]:,.0f} µs CPU per request")
        print(f"\nload average now: {os.getloadavg()[0]:.2f}")
        print("| tree | server CPU per request (median) | holds/s (median) | rounds |")
        print("|---|---|---|---|")
        for name in servers:
            print(
                f"| {name} | {statistics.median(cpu[name]):,.0f} µs | "
                f"{statistics.median(rate[name]):,.0f} | "
                f"{', '.join(f'{c:,.0f}' for c in cpu[name])} µs |"
            )
    finally:
        for proc, _ in servers.values():
            proc.stop()
        asyncio.run(b.drop_inventory(settings, list(events.ids.values())))
        asyncio.run(b.drop_database(dsn))
        time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
