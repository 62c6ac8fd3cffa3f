"""What ``WAIT 1 <ms>`` after a script costs on the inventory's script link.

    uv run python -m loadtest.replica_wait [--calls 5000] [--concurrency 1,64] [--wait-ms 50]

A one-key write script (the size of a confirm's reply does not matter here) is run
``calls`` times through ``core.inventory_link.ScriptLink`` on the dev Redis Cluster
(``core.devservices up``), ``concurrency`` callers at once, once marked ``replicated``
with the link's replica wait off and once with it on. Reported: calls per second, p50
and p99 per call, and how many no replica acknowledged in time. The keys are its own
(one fresh hash tag) and deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time

from core.inventory_link import Route, Script, ScriptLink

WRITE = "redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) return 1"


async def _run(
    seeds: list[tuple[str, int]], wait_ms: int, calls: int, concurrency: int, tag: str
) -> tuple[float, float, float, int]:
    link = ScriptLink(seeds, replica_wait_ms=wait_ms)
    script = Script(WRITE, replicated=True)
    route = Route([f"{{replica-wait-{tag}}}:h"])
    times: list[float] = []
    todo = iter(range(calls))

    async def caller() -> None:
        for i in todo:
            t0 = time.perf_counter()
            await link.run(script, route, (i, i))
            times.append(time.perf_counter() - t0)

    try:
        await link.run(script, route, (0, 0))  # connect, load the script
        started = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        took = time.perf_counter() - started
        await link.run(Script("return redis.call('DEL', KEYS[1])"), route, ())
    finally:
        link.close()
    times.sort()
    return (
        calls / took,
        times[len(times) // 2] * 1000,
        times[min(len(times) - 1, int(0.99 * len(times)))] * 1000,
        link.unreplicated,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.replica_wait", description=__doc__)
    parser.add_argument("--calls", type=int, default=5000)
    parser.add_argument("--concurrency", default="1,64")
    parser.add_argument("--wait-ms", type=int, default=50)
    args = parser.parse_args(argv)

    from core import devservices
    from core.settings import load_settings

    seeds = load_settings({**os.environ, **devservices.up()}).redis.startup_nodes()
    tag = secrets.token_hex(4)
    print("| callers at once | WAIT | calls/s | p50 ms | p99 ms | not acknowledged |")
    print("|---|---|---|---|---|---|")
    for concurrency in (int(c) for c in args.concurrency.split(",")):
        for wait_ms in (0, args.wait_ms):
            rate, p50, p99, unacked = asyncio.run(
                _run(seeds, wait_ms, args.calls, concurrency, tag)
            )
            label = f"WAIT 1 {wait_ms}" if wait_ms else "none"
            print(f"| {concurrency} | {label} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {unacked} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
