"""Soak: a fixed rate of purchases for a bounded time, with the processes' resources sampled.

    uv run python -m loadtest.soak [--minutes 1] [--rate 40] [--sample-s 5]

The real API and workers (``python -m api``, the persister, issuer, notifier and expirer)
run on the dev servers (``core.devservices up``) with a database, a topic prefix and an
80,000-seat event of the soak's own. Every ``1/rate`` s one buyer holds a seat and buys it
(open loop: a slow answer does not slow the arrivals). Every ``sample-s`` seconds the RSS
and the open TCP connections of each process (its whole process tree) and the Kafka
consumer lag its /metrics report are sampled. At the end: per process, the RSS at the
start and the end and its least-squares slope (MiB per minute, over the second half of
the run, once warm), the connections' range, the maximum lag, and the answers by status.
The default is short (1 minute); ``--minutes 5`` is the soak of docs/RELIABILITY.md. Not
run by the test suite. Cleans up its database and inventory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

from loadtest import bench as b

NAMES = ("api", "persister", "issuer", "notifier", "expirer")


@dataclass
class Samples:
    at: list[float] = field(default_factory=list)
    rss: dict[str, list[float]] = field(default_factory=dict)  # MiB
    conns: dict[str, list[int]] = field(default_factory=dict)
    lag: list[float] = field(default_factory=list)


def _tree_rss_conns(proc: b.Proc) -> tuple[float, int]:
    rss, conns = 0, 0
    for p in proc.tree():
        with contextlib.suppress(psutil.Error):
            rss += p.memory_info().rss
            conns += sum(1 for c in p.net_connections(kind="tcp") if c.status != "LISTEN")
    return rss / 2**20, conns


def _lag(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        with contextlib.suppress(httpx.HTTPError):
            for line in httpx.get(f"http://{b.HOST}:{port}/metrics", timeout=2).text.splitlines():
                if line.startswith("ticketbuster_consumer_lag{"):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def slope_per_min(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (seconds), per minute."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    cov = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
    return 0.0 if var == 0 else 60 * cov / var


async def _drive(
    base: str,
    event_id: int,
    seats: list[str],
    tokens: list[str],
    rate: float,
    seconds: float,
    sample: Any,
) -> Counter[str]:
    results: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(base_url=base, timeout=20, limits=limits) as http:

        async def purchase(i: int) -> None:
            auth = {"Authorization": f"Bearer {tokens[i % len(tokens)]}"}
            try:
                hold = await http.post(
                    f"/api/v1/events/{event_id}/holds", json={"seats": [seats[i]]}, headers=auth
                )
                results[f"hold {hold.status_code}"] += 1
                if hold.status_code != 201:
                    return
                order = await http.post(
                    "/api/v1/orders",
                    json={"hold_id": hold.json()["hold_id"]},
                    headers={**auth, "Idempotency-Key": uuid.uuid4().hex},
                )
                results[f"order {order.status_code}"] += 1
            except httpx.HTTPError as exc:
                results[f"error {type(exc).__name__}"] += 1

        started = time.monotonic()
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        next_sample = started
        while (now := time.monotonic()) - started < seconds and i < len(seats):
            due = started + i / rate
            if now >= next_sample:
                await asyncio.to_thread(sample, now - started)
                next_sample += sample.interval
            if due > now:
                await asyncio.sleep(min(due - now, 0.05))
                continue
            task = asyncio.ensure_future(purchase(i))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
        await asyncio.gather(*tasks)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--rate", type=float, default=40.0, help="purchases per second")
    parser.add_argument("--sample-s", type=float, default=5.0)
    args = parser.parse_args(argv)

    from core import devservices
    from core.settings import load_settings

    base_env = {**os.environ, **devservices.up()}
    dsn = b.bench_dsn(load_settings(base_env).database.url) + "_soak"
    tag = secrets.token_hex(3)
    env = {
        **base_env,
        "TB_ENV": "dev",
        "TB_AUTH_DEV_ISSUER_ENABLED": "true",
        "TB_DATABASE_URL": dsn,
        "TB_KAFKA_TOPIC_PREFIX": f"soak{tag}.",
        "TB_API_RATE_LIMIT_PER_IP": "1000000000",
        "TB_API_RATE_LIMIT_PER_USER": "1000000000",
        "TB_HOLDS_ATTEMPTS_PER_MINUTE": "0",
        "TB_HOLDS_MAX_SEATS_PER_BUYER": "100000",
    }
    ports = {name: b.free_port() for name in NAMES[1:]}
    for name, port in ports.items():
        env[f"TB_WORKERS_{name.upper()}_PORT"] = str(port)
    settings = load_settings(env)
    work = b.ROOT / ".tb" / "soak"
    work.mkdir(parents=True, exist_ok=True)
    asyncio.run(b.recreate_database(dsn))
    events = asyncio.run(b.seed_bench_events(dsn, settings, None))
    event_id = events.ids["sellout"]
    seats = [s for s, _ in events.seats[event_id]]
    procs: dict[str, b.Proc] = {}
    samples = Samples()
    try:
        tokens, _ = asyncio.run(b.mint_tokens(settings, f"soak-{tag}-", 200))
        procs["api"], base = b.start_api(env, work / "logs", "soak-api")
        for name in NAMES[1:]:
            procs[name] = b.Proc(
                name, [sys.executable, "-m", f"workers.{name}"], env, work / "logs"
            )
        for name, port in ports.items():
            b.wait_until(lambda p=port: b.http_ok(f"http://{b.HOST}:{p}/healthz"), name, 60)

        def sample(t: float) -> None:
            samples.at.append(t)
            for name, proc in procs.items():
                rss, conns = _tree_rss_conns(proc)
                samples.rss.setdefault(name, []).append(rss)
                samples.conns.setdefault(name, []).append(conns)
            samples.lag.append(_lag(list(ports.values())))

        sample.interval = args.sample_s  # type: ignore[attr-defined]
        results = asyncio.run(
            _drive(base, event_id, seats, tokens, args.rate, args.minutes * 60, sample)
        )
        sample(samples.at[-1] + args.sample_s if samples.at else 0.0)
    finally:
        for proc in procs.values():
            proc.stop()
        asyncio.run(b.drop_inventory(settings, list(events.ids.values())))
        asyncio.run(b.drop_database(dsn))
    half = len(samples.at) // 2
    print(f"soak: {args.minutes:g} min at {args.rate:g} purchases/s; answers {dict(results)}")
    print(
        "| process | RSS start MiB | RSS end MiB | slope (2nd half) MiB/min | TCP conns min-max |"
    )
    print("|---|---|---|---|---|")
    for name in NAMES:
        rss, conns = samples.rss.get(name, [0.0]), samples.conns.get(name, [0])
        slope = slope_per_min(samples.at[half:], rss[half:])
        print(
            f"| {name} | {rss[0]:.1f} | {rss[-1]:.1f} | {slope:+.2f} | {min(conns)}-{max(conns)} |"
        )
    print(f"Kafka consumer lag (sum over groups): max {max(samples.lag, default=0):.0f}, "
          f"last {samples.lag[-1] if samples.lag else 0:.0f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
