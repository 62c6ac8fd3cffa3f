"""Live seat map benchmark: hold -> WebSocket delivery delay with N clients on one event.

    uv run python -m loadtest.ws_latency                 # starts its own API on loopback
    uv run python -m loadtest.ws_latency --url 127.0.0.1:8000 --max-clients 2000

Loads a fresh event into the Redis Cluster, connects clients to
``/api/v1/events/{id}/live`` in growing steps (N = 50, 100, 200, ...) and, at each
step, runs a hold storm through the real inventory scripts (``Inventory.hold``, one
seat per hold, a new buyer each) at ``--rate`` holds per second. The measuring
clients timestamp every seat change they receive. Two delays per delivery:

- **commit -> delivery** (the headline): receive time minus the change's version,
  which is the stream entry id, i.e. the Redis server time (ms) of the hold script
  that made the change. Stream tail + coalescing window (100 ms) + fan-out + client.
- **request -> delivery**: receive time minus just before the ``Inventory.hold`` call;
  adds the hold round trip and this process's own scheduling delays.

Reports p50 / p99 / max per N and the largest N with p99 under ``--target-ms``.
Bounded: stops at ``--max-clients``, when p99 goes over the target twice in a row, or
after ``--budget-s``. Loopback only. ``--sample`` clients (100) measure; the others
are raw sockets that read and drop the bytes (and answer pings), so the load
generator stays light while the server does the full work for every client. All of
it runs in this one process: on a small machine it still competes with the server
for CPU (say so when you quote it).
Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import websockets

from core.inventory import Inventory
from core.settings import HoldSettings, load_settings


class _Change(msgspec.Struct):
    version: str
    seats: list[str]


class _Frame(msgspec.Struct):
    type: str
    changes: list[_Change] = []


_decode = msgspec.json.Decoder(_Frame).decode


@dataclass
class Probe:
    """Shared by all clients: when each seat's hold was sent, and the delays seen."""

    sent_at: dict[str, float] = field(default_factory=dict)
    delays_ms: list[float] = field(default_factory=list)  # commit -> delivery
    request_ms: list[float] = field(default_factory=list)  # request -> delivery
    recording: bool = False
    frames: int = 0


async def _client(url: str, probe: Probe, ready: asyncio.Event, sampled: bool) -> None:
    """Receive until cancelled and answer pings; decode every frame and timestamp each
    seat change (a measuring client)."""
    async with websockets.connect(url, ping_interval=None, max_queue=None) as ws:
        ready.set()
        async for raw in ws:
            now = time.perf_counter()
            frame = _decode(raw)
            if frame.type == "ping":
                await ws.send('{"type":"pong"}')
                continue
            probe.frames += 1
            if not probe.recording:
                continue
            wall_ms = time.time() * 1000
            sent_at = probe.sent_at
            for change in frame.changes:
                seat = change.seats[0]
                sent = sent_at.get(seat)
                if sent is None:
                    continue  # not this step's hold (an expiry, an earlier step)
                probe.request_ms.append((now - sent) * 1000)
                probe.delays_ms.append(wall_ms - int(change.version.partition("-")[0]))


_PONG = b'{"type":"pong"}'


def _masked_text_frame(payload: bytes) -> bytes:
    """A client -> server text frame (clients must mask; RFC 6455 5.3)."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + body


async def _load_client(host: str, port: int, path: str, ready: asyncio.Event) -> None:
    """A non-measuring client at almost no CPU: the upgrade by hand, then raw reads that
    are thrown away (the server does the same work as for any client). A ping's JSON is
    visible in the raw bytes (server frames are not masked), so it is answered."""
    reader, writer = await asyncio.open_connection(host, port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"upgrade refused: {head[:80]!r}")
    ready.set()
    try:
        while data := await reader.read(1 << 16):
            if b'"type":"ping"' in data:
                writer.write(_masked_text_frame(_PONG))
    finally:
        writer.close()


async def _storm(
    inventory: Inventory, event_id: int, seats: list[str], rate: float, probe: Probe
) -> int:
    """Hold ``seats`` one by one at ``rate`` per second; returns how many succeeded."""
    interval = 1.0 / rate
    start = time.perf_counter()
    done = 0
    in_flight: set[asyncio.Task[Any]] = set()

    async def one(seat: str, i: int) -> None:
        nonlocal done
        probe.sent_at[seat] = time.perf_counter()
        await inventory.hold(event_id, [seat], f"bench-{event_id}-{i}", ttl_s=60)
        done += 1

    for i, seat in enumerate(seats):
        target = start + i * interval
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(seat, i))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    await asyncio.gather(*in_flight, return_exceptions=True)
    return done


def _server_delivery(base: str) -> tuple[float, float]:
    """(sends within 250 ms, all sends) from the server's ticketbuster_ws_delivery_seconds."""
    try:
        text = httpx.get(f"http://{base}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0, 0.0
    within = total = 0.0
    for line in text.splitlines():
        if line.startswith('ticketbuster_ws_delivery_seconds_bucket{le="0.25"}'):
            within += float(line.rsplit(" ", 1)[1])
        elif line.startswith("ticketbuster_ws_delivery_seconds_count"):
            total += float(line.rsplit(" ", 1)[1])
    return within, total


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(base: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the API exited with {proc.returncode}")
        try:
            if httpx.get(f"http://{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"the API at {base} did not become healthy")
        time.sleep(0.2)


@contextlib.contextmanager
def _own_api() -> Any:
    port = _free_port()
    env = {**os.environ, "TB_API_PORT": str(port), "TB_API_HOST": "127.0.0.1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "api"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_healthy(f"127.0.0.1:{port}", proc)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def run(args: argparse.Namespace, base: str) -> list[dict[str, Any]]:
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    settings = load_settings()
    redis = RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in settings.redis.startup_nodes()],
        decode_responses=False,
    )
    await redis.initialize()
    inventory = Inventory(redis, HoldSettings(max_seats_per_buyer=6))
    event_id = int(time.time() * 1000) * 1000 + os.getpid() % 1000
    per_step = int(args.rate * args.duration)
    steps = []
    n = args.start_clients
    while n <= args.max_clients:
        steps.append(n)
        n *= 2
    if steps and steps[-1] != args.max_clients:
        steps.append(args.max_clients)
    total_seats = per_step * (len(steps) + 1)
    layout = [
        (f"S{i // 1000}-R{(i // 50) % 20}-{i % 50 + 1}", "GENERAL") for i in range(total_seats)
    ]
    await inventory.load(event_id, 0, layout, {})
    path = f"/api/v1/events/{event_id}/live"
    url = f"ws://{base}{path}"
    host, _, port = base.rpartition(":")

    probe = Probe()
    samples = 0
    tasks: list[asyncio.Task[None]] = []
    results: list[dict[str, Any]] = []
    began = time.monotonic()
    over = 0
    seat_cursor = 0
    try:
        for n in steps:
            if time.monotonic() - began > args.budget_s:
                print(f"time budget of {args.budget_s}s reached", file=sys.stderr)
                break
            while len(tasks) < n:
                ready = asyncio.Event()
                sampled = len(tasks) < args.sample  # the first ones, in every step
                if sampled:
                    client = _client(url, probe, ready, sampled)
                else:
                    client = _load_client(host, int(port), path, ready)
                tasks.append(asyncio.create_task(client))
                samples += sampled
                await asyncio.wait_for(ready.wait(), 10)
            probe.sent_at = {}
            probe.delays_ms = []
            probe.request_ms = []
            await asyncio.sleep(0.5)  # let hellos and connection setup settle
            seats = [layout[i][0] for i in range(seat_cursor, seat_cursor + per_step)]
            seat_cursor += per_step
            server_before = _server_delivery(base)
            gc.collect()
            gc.freeze()  # the load generator's own GC pauses must not look like delivery lag
            gc.disable()
            probe.recording = True
            t0 = time.perf_counter()
            held = await _storm(inventory, event_id, seats, args.rate, probe)
            await asyncio.sleep(args.drain_s)
            probe.recording = False
            gc.enable()
            elapsed = time.perf_counter() - t0
            server_after = _server_delivery(base)
            server_sends = server_after[1] - server_before[1]
            server_within = server_after[0] - server_before[0]
            delays = probe.delays_ms
            expected = held * samples
            row = {
                "clients": n,
                "sampled_clients": samples,
                "holds": held,
                "rate_per_s": args.rate,
                "deliveries": len(delays),
                "missing": max(0, expected - len(delays)),
                "p50_ms": round(_percentile(delays, 50), 1),
                "p99_ms": round(_percentile(delays, 99), 1),
                "max_ms": round(max(delays) if delays else float("nan"), 1),
                "request_p50_ms": round(_percentile(probe.request_ms, 50), 1),
                "request_p99_ms": round(_percentile(probe.request_ms, 99), 1),
                "seconds": round(elapsed, 1),
                "loadavg_1m": round(os.getloadavg()[0], 2),
                # The server's own view (all clients, oldest change of each frame):
                # the share of sends that left within 250 ms of the commit.
                "server_sends": int(server_sends),
                "server_within_250ms": round(server_within / server_sends, 3)
                if server_sends
                else None,
            }
            results.append(row)
            print(
                f"N={n:5d}  holds={held:5d}  sampled={samples:4d}"
                f"  deliveries={len(delays):7d}/{expected:<7d}"
                f"  p50={row['p50_ms']:7.1f} ms  p99={row['p99_ms']:7.1f} ms"
                f"  max={row['max_ms']:7.1f} ms"
                f"  (request->delivery p99={row['request_p99_ms']:7.1f} ms;"
                f" server: {row['server_within_250ms']} of sends within 250 ms)"
                f"  load={row['loadavg_1m']:.1f}",
                flush=True,
            )
            over = over + 1 if row["p99_ms"] >= args.target_ms or row["missing"] else 0
            if over >= 2:
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await redis.aclose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--url", help="host:port of a running API (default: start one here)")
    parser.add_argument("--start-clients", type=int, default=50)
    parser.add_argument("--max-clients", type=int, default=3200)
    parser.add_argument("--rate", type=float, default=100.0, help="holds per second")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds of storm per step")
    parser.add_argument("--drain-s", type=float, default=1.0)
    parser.add_argument("--target-ms", type=float, default=250.0)
    parser.add_argument("--budget-s", type=float, default=240.0)
    parser.add_argument(
        "--sample",
        type=int,
        default=100,
        help="how many clients measure (the first ones); the rest only read raw bytes",
    )
    args = parser.parse_args()
    for host in ((args.url or "127.0.0.1").rsplit(":", 1)[0],):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise SystemExit("loopback only")

    with contextlib.ExitStack() as stack:
        base = args.url or stack.enter_context(_own_api())
        _wait_healthy(base)
        results = asyncio.run(run(args, base))
    ok = [r["clients"] for r in results if r["p99_ms"] < args.target_ms and not r["missing"]]
    best = max(ok) if ok else 0
    print(f"largest N with p99 < {args.target_ms:g} ms: {best}")
    print(
        msgspec.json.encode(
            {
                "target_ms": args.target_ms,
                "largest_n": best,
                "delay": (
                    "p50/p99/max: commit -> delivery (the change's stream id, i.e. Redis time"
                    " of the hold script, to receipt); request_*: from just before the hold call"
                ),
                "steps": results,
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
