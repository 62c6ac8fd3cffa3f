"""Bursts for one seat: how many buyers sending at the same instant one API worker answers
without shedding (503), and what they get.

    uv run python -m loadtest.burst [--sizes 100,300,1000,2000] [--workers 1]

For each size N: N buyers (tokens of their own, already verified by the API, as buyers who
came back after an earlier 409) open their connections first, then all send
``POST /api/v1/events/{id}/holds`` for the same seat at once. One gets 201, the others
should get 409; a 503 is load shedding (``TB_API_MAX_IN_FLIGHT``, the request deadline).
Reported per size: the statuses and the time from the first request written to the last
answer read. Loopback only, bounded (each burst waits at most 60 s), cleans up its
database and inventory.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import sys
import time
from collections import Counter

import msgspec

from loadtest import bench as b


async def _burst(port: int, path: str, seat: str, tokens: list[str]) -> tuple[Counter[int], float]:
    body = msgspec.json.encode({"seats": [seat]})
    requests = [
        (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        + body
        for token in tokens
    ]
    conns = []
    for _ in tokens:  # opened before the burst; one client's connects are not the test
        conns.append(await asyncio.wait_for(asyncio.open_connection(b.HOST, port), 10))
    go = asyncio.Event()

    async def one(i: int) -> int:
        reader, writer = conns[i]
        await go.wait()
        writer.write(requests[i])
        try:
            line = await asyncio.wait_for(reader.readline(), 60)
            return int(line.split()[1]) if line else 0
        except (TimeoutError, ValueError, IndexError, ConnectionError):
            return 0
        finally:
            writer.close()

    tasks = [asyncio.ensure_future(one(i)) for i in range(len(tokens))]
    await asyncio.sleep(0.2)
    started = time.perf_counter()
    go.set()
    statuses = await asyncio.gather(*tasks)
    return Counter(statuses), time.perf_counter() - started


async def _warm(port: int, tokens: list[str]) -> None:
    """Each buyer's token verified once (GET /api/v1/me), so a burst measures the hold."""
    import httpx

    async with httpx.AsyncClient(base_url=f"http://{b.HOST}:{port}", timeout=30) as http:
        for start in range(0, len(tokens), 64):
            await asyncio.gather(
                *(
                    http.get("/api/v1/me", headers={"Authorization": f"Bearer {t}"})
                    for t in tokens[start : start + 64]
                )
            )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.burst", description=__doc__)
    parser.add_argument("--sizes", default="100,300,1000,2000")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]

    from core import devservices
    from core.settings import load_settings

    base_env = {**os.environ, **devservices.up()}
    dsn = b.bench_dsn(load_settings(base_env).database.url) + "_burst"
    tag = secrets.token_hex(3)
    env = {
        **base_env,
        "TB_ENV": "dev",
        "TB_AUTH_DEV_ISSUER_ENABLED": "true",
        "TB_DATABASE_URL": dsn,
        "TB_KAFKA_TOPIC_PREFIX": f"burst{tag}.",
        "TB_API_RATE_LIMIT_PER_IP": "1000000000",
    }
    settings = load_settings(env)
    work = b.ROOT / ".tb" / "burst"
    work.mkdir(parents=True, exist_ok=True)
    asyncio.run(b.recreate_database(dsn))
    events = asyncio.run(b.seed_bench_events(dsn, settings, 1_000))
    event_id = events.ids["holds"]
    seats = events.seats[event_id]
    results: list[tuple[int, Counter[int], float]] = []
    try:
        tokens, _ = asyncio.run(b.mint_tokens(settings, f"burst-{tag}-", max(sizes)))
        api, base = b.start_api(env, work, "burst-api", workers=args.workers)
        port = int(base.rsplit(":", 1)[1])
        try:
            asyncio.run(_warm(port, tokens))
            for n in sizes:
                asyncio.run(b.reset_inventory(settings, event_id, seats))
                try:
                    statuses, elapsed = asyncio.run(
                        _burst(port, f"/api/v1/events/{event_id}/holds", seats[0][0], tokens[:n])
                    )
                except (OSError, TimeoutError) as exc:
                    b.log(f"burst {n}: could not open {n} connections from one client: {exc}")
                    break
                results.append((n, statuses, elapsed))
                b.log(f"burst {n}: {dict(sorted(statuses.items()))} in {elapsed * 1000:.0f} ms")
        finally:
            api.stop()
    finally:
        asyncio.run(b.drop_inventory(settings, list(events.ids.values())))
        asyncio.run(b.drop_database(dsn))
    print(
        f"| buyers at once | 201 | 409 | 503 | other | all answered in | ({args.workers} worker) |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, statuses, elapsed in results:
        other = sum(v for k, v in statuses.items() if k not in (201, 409, 503))
        print(
            f"| {n:,} | {statuses.get(201, 0)} | {statuses.get(409, 0):,} | "
            f"{statuses.get(503, 0):,} | {other} | {elapsed * 1000:,.0f} ms | |"
        )
    clean = [n for n, s, _ in results if not s.get(503) and set(s) <= {201, 409}]
    print(f"largest burst answered without a 503: {max(clean):,}" if clean else "every size shed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
