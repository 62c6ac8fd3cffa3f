"""``make bench``: TicketBuster side by side with a naive baseline and the ceilings.

    uv run python -m loadtest.bench            # the whole run (~10 minutes max), writes
                                               # docs/BENCHMARKS.md
    uv run python -m loadtest.bench --quick    # short runs, a small sell-out; for trying

One run measures, on this machine, with the same connection count everywhere:

1. hold throughput and latency through HTTP for TicketBuster, the naive PostgreSQL
   baseline (loadtest/naive_baseline.py) and an empty endpoint (the framework ceiling),
   plus the raw Redis ceiling (redis-benchmark running EVALSHA of the hold script);
2. a sell-out of a copy of the seed's 80,000-seat Final Copa Libertadores;
3. the persister's throughput against inserting order by order;
4. WebSocket delivery latency (area 7's loadtest/ws_latency.py, when present);
plus the pytest-benchmark wire micro-benchmarks and a py-spy profile of the hold path.

Isolation (docs/decisions/0801-benchmark-method.md): its own database, dropped at the
end; event ids far above the dev ones; its own Kafka topic prefix; its own servers on
free loopback ports. Every step is bounded in time and count and stops by itself.
Only measured figures are written; a step that could not run says why.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import platform
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil

ROOT = Path(__file__).resolve().parent.parent
WRK_DIR = ROOT / "loadtest" / "wrk"
OUT = ROOT / "docs" / "BENCHMARKS.md"
HOST = "127.0.0.1"
SELLOUT_TITLE = "Final Copa Libertadores"
RETURNING_BUYERS = 3_500
RETURNING_SEATS_PER_BUYER = 12
HOT_SEATS = 20
PACED_CONNECTIONS = 16
LARGE_BATCH = 2_000
# Holds made for the order run: more than any run buys (it must never run out).
ORDERS_PER_S_CEILING = 6_000
API_WORKERS_FULL = 2  # the machine's cores: what make dev and the k8s pod run by default


# -- configuration -----------------------------------------------------------------------


@dataclass
class Config:
    connections: int = 64  # the same for every hold-throughput target
    duration_s: int = 10
    warmup_s: int = 2
    sellout_connections: int = 64  # K concurrent buyers
    sellout_chunk: int = 6  # seats per buyer: the per-buyer limit
    sellout_seats: int | None = None  # None: the whole 80,000-seat event
    sellout_cap_s: int = 200
    drain_cap_s: int = 150
    redis_requests: int = 60_000
    redis_keyspace: int = 200_000
    persister_orders: int = 10_000  # 60,000 tickets
    one_by_one_cap_s: float = 10.0
    profile_s: int = 8
    work: Path = ROOT / ".tb" / "bench"
    keep: bool = False
    only: set[str] = field(default_factory=set)

    def wants(self, step: str) -> bool:
        return not self.only or step in self.only


def quick(config: Config) -> Config:
    config.duration_s = 3
    config.warmup_s = 1
    config.sellout_seats = 8_000
    config.redis_requests = 30_000
    config.redis_keyspace = 100_000
    config.persister_orders = 2_000
    config.one_by_one_cap_s = 5.0
    config.profile_s = 3
    return config


# -- small tools -------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


def wait_until(check: Any, what: str, timeout: float, interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def ensure_wrk() -> str | None:
    """wrk from Debian; installed with apt when we are root and it is missing.

    Tries the install first with the package lists as they are, then once more after
    ``apt-get update``. Idempotent: nothing happens when wrk is there.
    """
    found = shutil.which("wrk")
    if found or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    log("wrk is missing: apt-get install -y wrk")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    for before in ([], [["apt-get", "update", "-qq"]]):
        for cmd in [*before, install]:
            subprocess.run(cmd, env=env, capture_output=True, timeout=300, check=False)
        found = shutil.which("wrk")
        if found:
            return found
    return None


class Proc:
    """A server this harness started: its own process group, stopped by its pid."""

    def __init__(
        self, name: str, cmd: list[str], env: dict[str, str], logdir: Path, cwd: Path = ROOT
    ) -> None:
        self.name = name
        self.cmd = cmd
        logdir.mkdir(parents=True, exist_ok=True)
        self.log_path = logdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        self.ps = psutil.Process(self.popen.pid)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def worker_pids(self) -> list[int]:
        return [p.pid for p in self.tree()]

    def stop(self) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=5)
        self._log.close()

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


def granian_cmd(target: str, port: int) -> list[str]:
    """The server command, the same for the real API, the baseline and the empty endpoint.

    Mirrors how the API is served (Granian, ASGI factory, uvloop, one worker).
    """
    return [
        sys.executable, "-m", "granian", "--interface", "asgi", "--factory",
        "--loop", "uvloop", "--host", HOST, "--port", str(port), "--workers", "1",
        "--no-access-log", target,
    ]  # fmt: skip


def start_server(
    name: str, target: str, env: dict[str, str], logdir: Path, health: str = "/healthz"
) -> tuple[Proc, str]:
    port = free_port()
    proc = Proc(name, granian_cmd(target, port), env, logdir)
    base = f"http://{HOST}:{port}"
    try:
        wait_until(lambda: (not proc.alive()) or http_ok(base + health), f"{name} on {base}", 60)
    except RuntimeError:
        proc.stop()
        raise
    if not proc.alive():
        raise RuntimeError(f"{name} exited at start:\n{proc.tail()}")
    return proc, base


# -- wrk ---------------------------------------------------------------------------------


@dataclass
class HttpRun:
    """One wrk run against one target."""

    target: str
    connections: int
    duration_s: float
    requests: int
    statuses: dict[str, int]
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    errors: int
    generator_cpu_s: float
    server_cpu_s: float
    pace_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def ok_per_s(self, status: str = "201") -> float:
        return self.statuses.get(status, 0) / self.duration_s if self.duration_s else 0.0

    @property
    def generator_cpu_pct(self) -> float:
        return 100 * self.generator_cpu_s / self.duration_s if self.duration_s else 0.0

    @property
    def server_cpu_pct(self) -> float:
        return 100 * self.server_cpu_s / self.duration_s if self.duration_s else 0.0


def run_wrk(
    wrk: str,
    base: str,
    script: str,
    args: Sequence[str],
    *,
    connections: int,
    duration_s: int,
    threads: int = 1,
    server: Proc | None = None,
    target: str = "",
    timeout: str = "5s",
) -> HttpRun:
    cmd = [
        wrk, f"-t{threads}", f"-c{connections}", f"-d{duration_s}s", "--timeout", timeout,
        "-s", str(WRK_DIR / script), base, "--", *args,
    ]  # fmt: skip
    cpu0 = children_cpu_s()
    server0 = server.cpu_s() if server else 0.0
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=duration_s + 120, check=False
    )
    server_cpu = (server.cpu_s() - server0) if server else 0.0
    gen_cpu = children_cpu_s() - cpu0
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result ({done.returncode}): {done.stderr[-2000:]}")
    data = json.loads(line[len("WRK_JSON ") :])
    duration = data["duration_us"] / 1e6
    errors = sum(data.get(k, 0) for k in ("connect_errors", "read_errors", "write_errors"))
    return HttpRun(
        target=target,
        connections=connections,
        duration_s=duration,
        requests=data["requests"],
        statuses={k: int(v) for k, v in data.get("statuses", {}).items()},
        p50_ms=data["p50_us"] / 1000,
        p90_ms=data.get("p90_us", 0) / 1000,
        p99_ms=data["p99_us"] / 1000,
        max_ms=data["max_us"] / 1000,
        errors=errors + data.get("timeouts", 0),
        generator_cpu_s=gen_cpu,
        server_cpu_s=server_cpu,
        extra={k: v for k, v in data.items() if k in ("counts", "wrapped")},
    )


def hold_runs(
    wrk: str,
    config: Config,
    name: str,
    base: str,
    server: Proc,
    event_id: int,
    files: tuple[Path, Path],
    reset: Any,
    *,
    paced: bool,
    returning: tuple[Path, Path] | None = None,
    hot: tuple[Path, Path] | None = None,
) -> dict[str, HttpRun]:
    """Warm-up, a peak run and (if ``paced``) a run at about half the peak rate.

    ``files`` gives every request a new buyer (20,000 round robin: the API's verified-token
    cache never helps). ``returning``, if given, adds a peak run whose few thousand buyers
    come back (their tokens fit the cache), as buyers who retry after a 409 do. ``hot``, if
    given, adds a run where everyone goes for the same few front-row seats (mostly 409s).
    """
    runs: dict[str, HttpRun] = {}

    def once(
        duration: int, pace_ms: float, label: str, which: tuple[Path, Path], connections: int = 0
    ) -> HttpRun:
        tokens, seats = which
        reset()
        run = run_wrk(
            wrk, base, "holds.lua", [str(event_id), str(tokens), str(seats), f"{pace_ms:.3f}"],
            connections=connections or config.connections, duration_s=duration, server=server,
            target=name,
        )  # fmt: skip
        run.pace_ms = pace_ms
        log(
            f"{name} {label}: {run.rps:,.0f} req/s, {run.ok_per_s():,.0f} holds/s, "
            f"p50 {run.p50_ms:.2f} ms, p99 {run.p99_ms:.2f} ms, {run.statuses}"
        )
        return run

    once(config.warmup_s, 0, "warm-up", files)
    # One connection: a hold with nobody queued in front of it.
    runs["single"] = once(max(2, config.duration_s // 3), 0, "one connection", files, 1)
    runs["peak"] = once(config.duration_s, 0, "peak", files)
    if paced and runs["peak"].ok_per_s() > 0:
        # Half of the peak rate, offered steadily: PACED_CONNECTIONS connections, each
        # waiting `pace` ms before its next request, so rate = c / (pace + latency). The
        # latency is taken from the one-connection run (a hold with no queue), so no
        # calibration run is needed (one was too noisy on a shared machine).
        target = runs["peak"].ok_per_s() / 2
        c = min(PACED_CONNECTIONS, config.connections)
        pace = max(0.0, 1000 * c / target - runs["single"].p50_ms)
        half = once(config.duration_s, pace, "half of peak", files, c)
        half.extra["target_rps"] = target
        runs["half"] = half
    if returning is not None:
        once(config.warmup_s, 0, "warm-up, returning buyers", returning)
        runs["returning"] = once(config.duration_s, 0, "peak, returning buyers", returning)
    if hot is not None:
        runs["hot"] = once(config.duration_s, 0, "hot seats", hot)
    return runs


# -- the bench database and events -------------------------------------------------------


def bench_dsn(dsn: str) -> str:
    parts = urlsplit(dsn)
    db = parts.path.lstrip("/") or "ticketbuster"
    return urlunsplit(parts._replace(path=f"/{db}_bench"))


async def recreate_database(dsn: str) -> None:
    import asyncpg

    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def drop_database(dsn: str) -> None:
    import asyncpg

    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    finally:
        await admin.close()


def redis_client(settings: Any) -> Any:
    from redis.asyncio.cluster import ClusterNode, RedisCluster

    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in settings.redis.startup_nodes()],
        decode_responses=False,
    )


@dataclass
class BenchEvents:
    ids: dict[str, int]
    seats: dict[int, list[tuple[str, str]]]


async def seed_bench_events(dsn: str, settings: Any, capacity_override: int | None) -> BenchEvents:
    """Copies of the seed's 80,000-seat event in the bench database, inventory in Redis."""
    import asyncpg

    from core.inventory import Inventory
    from migrations import runner, seed

    await runner.migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        # Far above any dev id, different for every run: Redis keys never meet dev ones.
        base = 8_000_000_000 + (int(time.time()) % 1_000_000) * 10
        await conn.execute(f"ALTER TABLE catalog.events ALTER COLUMN id RESTART WITH {base}")
    finally:
        await conn.close()
    source = next(e for e in seed.read_csv() if e.title.startswith(SELLOUT_TITLE))
    tag = secrets.token_hex(3)
    roles = ("holds", "sellout", "persister")
    events = []
    for role in roles:
        capacity = source.capacity
        if capacity_override and role != "holds":
            capacity = capacity_override
        events.append(dataclasses.replace(source, slug=f"bench-{tag}-{role}", capacity=capacity))
    client = redis_client(settings)
    try:
        inventory = Inventory(client, settings.holds)
        report = await seed.seed(dsn, inventory, events, reload_inventory=True)
    finally:
        await client.aclose()
    created = [event_id for event_id, _slug, _n in report.created]
    ids = dict(zip(roles, created, strict=True))
    conn = await asyncpg.connect(dsn)
    try:
        seats: dict[int, list[tuple[str, str]]] = {}
        for event_id in ids.values():
            rows = await conn.fetch(
                """
                SELECT s.seat_id, s.category
                  FROM catalog.seats s
                  JOIN catalog.sections sec ON sec.event_id = s.event_id AND sec.code = s.section
                  JOIN catalog.rows r ON r.event_id = s.event_id AND r.section = s.section
                                     AND r.label = s.row_label
                 WHERE s.event_id = $1
                 ORDER BY sec.position, r.position, s.number
                """,
                event_id,
            )
            seats[event_id] = [(r["seat_id"], r["category"]) for r in rows]
    finally:
        await conn.close()
    return BenchEvents(ids=ids, seats=seats)


async def reset_inventory(settings: Any, event_id: int, seats: list[tuple[str, str]]) -> None:
    """Every seat free again: the partition is rebuilt (holds and buyer counts dropped)."""
    from core.inventory import Inventory

    client = redis_client(settings)
    try:
        await Inventory(client, settings.holds).load(event_id, 0, seats)
    finally:
        await client.aclose()


async def drop_inventory(settings: Any, event_ids: Sequence[int]) -> None:
    from core.inventory import partition_keys

    client = redis_client(settings)
    try:
        for event_id in event_ids:
            for key in partition_keys(event_id, 0):
                await client.unlink(key)
    finally:
        await client.aclose()


async def mint_tokens(settings: Any, prefix: str, n: int) -> tuple[list[str], dict[str, Any]]:
    """``n`` buyer tokens signed with the shared dev issuer key, and its public JWK."""
    from api.auth.dev_issuer import DevIssuer, load_or_create_key

    client = redis_client(settings)
    try:
        issuer = DevIssuer(settings.auth, await load_or_create_key(client))
    finally:
        await client.aclose()
    tokens = [issuer.issue(f"{prefix}{i}", roles=["buyer"])[0] for i in range(n)]
    return tokens, issuer.public_jwk


async def make_holds(
    settings: Any, event_id: int, seats: list[tuple[str, str]], buyers: list[tuple[str, str]],
    n: int,
) -> list[str]:  # fmt: skip
    """``n`` one-seat holds made through the inventory gateway (not the API), seat i for
    buyer ``i % len(buyers)``; lines "TOKEN HOLD_ID" for ``loadtest/wrk/orders.lua``."""
    from core.inventory import Inventory

    client = redis_client(settings)
    inventory = Inventory(client, settings.holds)
    lines: list[str] = [""] * n
    gate = asyncio.Semaphore(64)

    async def one(i: int) -> None:
        sub, token = buyers[i % len(buyers)]
        async with gate:
            hold = await inventory.hold(event_id, [seats[i][0]], sub)
        lines[i] = f"{token} {hold.hold_id}"

    try:
        await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        inventory.close()
        await client.aclose()
    return lines


def orders_run(
    wrk: str, config: Config, base: str, server: Proc, settings: Any, event_id: int,
    seats: list[tuple[str, str]], buyers: list[tuple[str, str]], threads: int,
) -> HttpRun:  # fmt: skip
    """The order path alone: buyers buy holds made beforehand (``orders.lua``)."""
    n = min(len(seats), ORDERS_PER_S_CEILING * config.duration_s)
    asyncio.run(reset_inventory(settings, event_id, seats))
    made = time.perf_counter()
    lines = asyncio.run(make_holds(settings, event_id, seats, buyers, n))
    log(f"orders: {n:,} holds made in {time.perf_counter() - made:.1f}s")
    holds_file = write_lines(config.work / "order-holds.txt", lines)
    run = run_wrk(
        wrk, base, "orders.lua", [str(holds_file), str(threads)],
        connections=config.connections, duration_s=config.duration_s, threads=threads,
        server=server, target="orders",
    )  # fmt: skip
    run.extra["holds"] = n
    log(
        f"orders: {run.ok_per_s('202'):,.0f} orders/s (202), p50 {run.p50_ms:.2f} ms, "
        f"p99 {run.p99_ms:.2f} ms, {run.statuses}, wrapped {run.extra.get('wrapped', 0)}"
    )
    asyncio.run(reset_inventory(settings, event_id, seats))
    return run


def write_lines(path: Path, lines: Sequence[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


# -- the raw Redis ceiling ---------------------------------------------------------------


@dataclass
class StorageCeiling:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    ok_fraction: float
    clients: int
    generator_cpu_s: float
    server_cpu_s: float
    duration_s: float
    command: str


def redis_ceiling(config: Config) -> StorageCeiling:
    """redis-benchmark: EVALSHA of prelude + hold.lua on a standalone redis-server."""
    import redis

    from core.holds import AttemptBudget
    from core.inventory import partition_keys, script_source
    from core.settings import HoldSettings

    port = free_port()
    workdir = config.work / "redis-ceiling"
    workdir.mkdir(parents=True, exist_ok=True)
    server = Proc(
        "redis-ceiling",
        ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly",
         "no", "--dir", str(workdir), "--protected-mode", "yes",
         "--busy-reply-threshold", "60000"],
        dict(os.environ),
        config.work / "logs",
    )  # fmt: skip
    try:
        client = redis.Redis(host=HOST, port=port)
        wait_until(lambda: _ping(client), "redis-server", 20)
        keys = partition_keys(1, 0)
        # The buyer's attempt budget, as the API spends it (HoldSettings' defaults).
        holds = HoldSettings()
        budget = AttemptBudget(holds.attempts_per_minute, holds.attempts_burst)
        load_sha = client.script_load(script_source("load"))
        hold_sha = client.script_load(script_source("hold"))
        # Seat ids match redis-benchmark's 12-digit __rand_int__ (as the row: one seat a
        # row keeps load.lua's per-row work trivial). Packed the way Inventory.load packs
        # them (lua/load.lua); checked below, since this bypasses the gateway's validation.
        n = config.redis_keyspace
        lines = "\n".join(f"1-{i:012d}-1\tGENERAL" for i in range(n))
        client.evalsha(load_sha, len(keys), *keys, "", lines, "")
        if int(client.hlen(keys[0])) != n:
            raise RuntimeError("the ceiling's inventory did not load (has lua/load.lua changed?)")
        cmd = [
            "redis-benchmark", "-h", HOST, "-p", str(port), "-c", str(config.connections),
            "-n", str(config.redis_requests), "-r", str(n), "-P", "1", "--csv",
            "EVALSHA", hold_sha, str(len(keys)), *keys,
            "h1.0.__rand_int__", "b__rand_int__", "600000", "1200000", "6",
            str(budget.interval_ms), str(budget.burst), "1-__rand_int__-1",
        ]  # fmt: skip
        cpu0, server0 = children_cpu_s(), server.cpu_s()
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
        elapsed = time.perf_counter() - started
        gen_cpu, server_cpu = children_cpu_s() - cpu0, server.cpu_s() - server0
        rows = [ln for ln in done.stdout.splitlines() if ln.startswith('"EVALSHA')]
        if not rows:
            raise RuntimeError(f"redis-benchmark gave no result: {done.stdout}{done.stderr}")
        cells = [c.strip('"') for c in rows[-1].split(",")]
        # "test","rps","avg","min","p50","p95","p99","max"
        held = int(client.hlen(keys[6]))
        shown = " ".join(cmd[:15]) + (
            f" <sha of prelude+hold.lua> {len(keys)} <the {len(keys)} partition keys>"
            " h1.0.__rand_int__ b__rand_int__ 600000 1200000 6"
            f" {budget.interval_ms} {budget.burst} 1-__rand_int__-1"
        )
        return StorageCeiling(
            requests=config.redis_requests,
            rps=float(cells[1]),
            p50_ms=float(cells[4]),
            p99_ms=float(cells[6]),
            ok_fraction=held / config.redis_requests,
            clients=config.connections,
            generator_cpu_s=gen_cpu,
            server_cpu_s=server_cpu,
            duration_s=elapsed,
            command=shown.replace(str(port), "PORT"),
        )
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


PGBENCH_HOLD = """\\set n random(1, :nseats)
\\set b random(1, 1000000000)
SELECT seat_id AS seat FROM naive.seat_index WHERE i = :n \\gset
BEGIN;
SELECT pg_advisory_xact_lock(hashtextextended('pgbench-' || :b, :event));
SELECT (sold OR coalesce(hold_expires_at > now(), false))::int AS taken,
       (SELECT count(*) FROM naive.seats x WHERE x.event_id = :event
           AND x.hold_buyer = 'pgbench-' || :b
           AND (x.sold OR x.hold_expires_at > now())) AS used
  FROM naive.seats WHERE event_id = :event AND seat_id = ANY(ARRAY[:seat::text])
 ORDER BY seat_id FOR UPDATE \\gset
\\if :taken = 0
WITH held AS (
    UPDATE naive.seats
       SET hold_id = 'hp' || :b || '-' || :n, hold_buyer = 'pgbench-' || :b,
           hold_expires_at = now() + interval '600 seconds'
     WHERE event_id = :event AND seat_id = ANY(ARRAY[:seat::text])
       AND NOT sold AND (hold_expires_at IS NULL OR hold_expires_at <= now())
 RETURNING seat_id, hold_expires_at
)
INSERT INTO naive.holds (hold_id, event_id, buyer, seats, expires_at)
SELECT 'hp' || :b || '-' || :n, :event, 'pgbench-' || :b, array_agg(seat_id), max(hold_expires_at)
  FROM held HAVING count(*) > 0;
\\endif
END;
"""


def pg_ceiling(config: Config, dsn: str) -> StorageCeiling:
    """pgbench running the naive baseline's hold transaction (the same SQL) on PostgreSQL."""
    import asyncpg

    from loadtest.naive_baseline import prepare_event

    event_id = 1
    n = config.redis_keyspace
    seats = [(f"1-{i:012d}-1", "GENERAL") for i in range(n)]
    asyncio.run(prepare_event(dsn, event_id, seats))

    async def index() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(
                "DROP TABLE IF EXISTS naive.seat_index;"
                " CREATE TABLE naive.seat_index (i int PRIMARY KEY, seat_id text NOT NULL)"
            )
            await conn.copy_records_to_table(
                "seat_index",
                schema_name="naive",
                records=[(i + 1, s) for i, (s, _) in enumerate(seats)],
            )
            await conn.execute("ANALYZE naive.seat_index")
        finally:
            await conn.close()

    async def holds() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM naive.holds WHERE event_id = $1", event_id
                )
            )
        finally:
            await conn.close()

    asyncio.run(index())
    workdir = config.work / "pgbench"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    script = workdir / "naive_hold.sql"
    script.write_text(PGBENCH_HOLD)
    cmd = [
        "pgbench", "-n", "-M", "prepared", "-c", str(min(config.connections, 64)), "-j", "1",
        "-T", str(config.duration_s), "-f", str(script), "-D", f"event={event_id}",
        "-D", f"nseats={n}", "-l", "--log-prefix", str(workdir / "log"), dsn,
    ]  # fmt: skip
    cpu0 = children_cpu_s()
    started = time.perf_counter()
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=config.duration_s + 120, check=False
    )
    elapsed = time.perf_counter() - started
    gen_cpu = children_cpu_s() - cpu0
    latencies: list[int] = []
    for log_file in workdir.glob("log*"):
        for line in log_file.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                latencies.append(int(parts[2]))
    if done.returncode != 0 or not latencies:
        raise RuntimeError(f"pgbench failed ({done.returncode}): {done.stderr[-800:]}")
    latencies.sort()
    ok = asyncio.run(holds())
    shown = " ".join(cmd[: cmd.index("-l")]).replace(str(workdir), ".tb/bench/pgbench")
    return StorageCeiling(
        requests=len(latencies),
        rps=len(latencies) / config.duration_s,
        p50_ms=latencies[len(latencies) // 2] / 1000,
        p99_ms=latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] / 1000,
        ok_fraction=ok / len(latencies),
        clients=min(config.connections, 64),
        generator_cpu_s=gen_cpu,
        server_cpu_s=0.0,
        duration_s=elapsed,
        command=shown + " DSN",
    )


def _ping(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


# -- sell-out ----------------------------------------------------------------------------


@dataclass
class Sellout:
    event_id: int
    seats: int
    buyers: int
    connections: int
    chunk: int
    wrk: HttpRun
    sold_out_s: float
    in_postgres_s: float | None
    redis_counts: dict[str, int]
    tickets: int
    accepted: int
    decided: dict[str, int]
    missing_orders: int
    oversold: int
    confirmed_seats: int
    confirmed_distinct_seats: int
    api_cpu_s: float
    persister_cpu_s: float
    command: str


async def seat_status_counts(settings: Any, event_id: int) -> dict[str, int]:
    from core.inventory import Inventory

    client = redis_client(settings)
    try:
        _version, statuses = await Inventory(client, settings.holds).seat_statuses(event_id)
    finally:
        await client.aclose()
    return dict(Counter(statuses.values()))


async def count_tickets(dsn: str, event_id: int) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM orders.tickets WHERE event_id = $1", event_id)
        )
    finally:
        await conn.close()


async def wait_for_tickets(
    dsn: str, event_id: int, expected: int, cap_s: float, started: float
) -> tuple[float | None, int, list[tuple[float, int]]]:
    """Poll until ``expected`` tickets are in PostgreSQL; (seconds since started, count, trace)."""
    import asyncpg

    conn = await asyncpg.connect(dsn)
    trace: list[tuple[float, int]] = []
    try:
        deadline = time.monotonic() + cap_s
        while True:
            n = int(
                await conn.fetchval(
                    "SELECT count(*) FROM orders.tickets WHERE event_id = $1", event_id
                )
            )
            now = time.monotonic()
            trace.append((now - started, n))
            if n >= expected:
                return now - started, n, trace
            if now > deadline:
                return None, n, trace
            await asyncio.sleep(0.1)
    finally:
        await conn.close()


async def sellout_checks(dsn: str, event_id: int, order_ids: list[str]) -> dict[str, Any]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        decided = {
            r["status"]: int(r["n"])
            for r in await conn.fetch(
                "SELECT status, count(*) AS n FROM orders.orders"
                " WHERE order_id = ANY($1::uuid[]) GROUP BY status",
                order_ids,
            )
        }
        # A seat promised to two confirmed orders would show as seats > distinct seats.
        row = await conn.fetchrow(
            """
            SELECT count(*) AS seats, count(DISTINCT s->>'seat_id') AS distinct_seats
              FROM orders.orders o, jsonb_array_elements(o.seats) s
             WHERE o.event_id = $1 AND o.status = 'confirmed'
            """,
            event_id,
        )
        dup_tickets = int(
            await conn.fetchval(
                "SELECT count(*) - count(DISTINCT seat_id) FROM orders.tickets WHERE event_id = $1",
                event_id,
            )
        )
        tickets = int(
            await conn.fetchval("SELECT count(*) FROM orders.tickets WHERE event_id = $1", event_id)
        )
    finally:
        await conn.close()
    assert row is not None
    return {
        "decided": decided,
        "confirmed_seats": int(row["seats"]),
        "confirmed_distinct_seats": int(row["distinct_seats"]),
        "oversold": dup_tickets + int(row["seats"]) - int(row["distinct_seats"]),
        "tickets": tickets,
    }


# -- persister ---------------------------------------------------------------------------


@dataclass
class PersisterFigures:
    orders: int
    tickets: int
    worker_s: float | None
    worker_steady_tps: float | None
    batched_tps: float | None
    large_batch_tps: float | None
    one_by_one_tps: float | None
    one_by_one_orders: int
    worker_cpu_s: float
    batch: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


async def event_prices(dsn: str, event_id: int) -> dict[str, int]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT code, price_minor FROM catalog.price_categories WHERE event_id = $1", event_id
        )
    finally:
        await conn.close()
    return {r["code"]: int(r["price_minor"]) for r in rows}


def synthetic_orders(
    event_id: int, seats: list[tuple[str, str]], prices: dict[str, int], chunk: int, n: int
) -> list[Any]:
    """OrderPlaced for ``n`` orders of ``chunk`` seats each, as the API would publish them."""
    import uuid

    from core.orders import build_order

    out = []
    now = int(time.time() * 1000)
    for i in range(min(n, len(seats) // chunk)):
        part = seats[i * chunk : (i + 1) * chunk]
        out.append(
            build_order(
                order_id=str(uuid.uuid4()),
                event_id=event_id,
                partition=0,
                hold_id=f"h{event_id}.0.{i:016x}",
                buyer=f"bench-p{i}",
                seats=[s for s, _ in part],
                categories=[c for _, c in part],
                prices=prices,
                placed_at=now,
                idempotency_key=str(uuid.uuid4()),
                fingerprint="bench",
            )
        )
    return out


async def delete_orders(dsn: str) -> None:
    """Empty the bench database's order tables (TRUNCATE: a row-by-row DELETE of orders is
    slow, as orders.idempotency_keys.order_id has no index for its foreign key)."""
    import asyncpg

    if not urlsplit(dsn).path.endswith("_bench"):
        raise RuntimeError(f"refusing to empty the order tables of {dsn}: not a bench database")
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "TRUNCATE orders.checkins, orders.tickets, orders.idempotency_keys, orders.orders"
        )
    finally:
        await conn.close()


async def write_in_batches(dsn: str, orders: list[Any], batch: int) -> float:
    """The persister's own write (decide_and_write), ``batch`` orders per transaction."""
    import asyncpg

    from workers.persister import decide_and_write

    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        for i in range(0, len(orders), batch):
            async with conn.transaction():
                await decide_and_write(conn, orders[i : i + batch])
        return time.perf_counter() - started
    finally:
        await conn.close()


async def write_one_by_one(dsn: str, orders: list[Any], cap_s: float) -> tuple[int, float]:
    """Order by order: one transaction per order, as a naive consumer commits each message."""
    import asyncpg

    from workers.persister import decide_and_write

    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        done = 0
        for order in orders:
            async with conn.transaction():
                await decide_and_write(conn, [order])
            done += 1
            if time.perf_counter() - started > cap_s:
                break
        return done, time.perf_counter() - started
    finally:
        await conn.close()


async def confirm_in_redis(settings: Any, orders: list[Any], concurrency: int = 32) -> list[Any]:
    """Hold and confirm each order's seats through the inventory, as the API does before it
    publishes: the persister then finds every order pending in Redis (it marks them sold)."""
    import msgspec

    from core.inventory import Inventory
    from workers.runtime import create_redis

    client = await create_redis(settings)  # initialised, pool as the workers size it
    inventory = Inventory(client, settings.holds)
    gate = asyncio.Semaphore(concurrency)
    out: list[Any] = [None] * len(orders)

    async def one(i: int, order: Any) -> None:
        async with gate:
            seats = [s.seat_id for s in order.seats]
            hold = await inventory.hold(order.event_id, seats, order.buyer)
            await inventory.confirm(hold.hold_id, order.buyer, order.order_id)
            out[i] = msgspec.structs.replace(order, hold_id=hold.hold_id)

    try:
        await asyncio.gather(*(one(i, o) for i, o in enumerate(orders)))
    finally:
        await client.aclose()
    return out


async def batch_breakdown(dsn: str, settings: Any, orders: list[Any]) -> dict[str, float]:
    """One persister batch, step by step, as workers/persister.py does it: the write
    (decide_and_write in one transaction), publishing the outcomes, telling Redis."""
    import asyncpg

    from core.inventory import Inventory
    from core.orders import TOPIC_CONFIRMED, OrderConfirmed, TicketRef, encode, event_key, topic
    from core.orders import ticket_id_for as tid
    from workers.persister import decide_and_write
    from workers.runtime import create_broker, create_redis, ensure_topics

    out: dict[str, float] = {"orders": float(len(orders))}
    conn = await asyncpg.connect(dsn)
    try:
        started = time.perf_counter()
        async with conn.transaction():
            await decide_and_write(conn, orders)
        out["write_s"] = time.perf_counter() - started
    finally:
        await conn.close()
    await ensure_topics(settings)
    broker = create_broker(settings, "bench")
    await broker.connect()
    try:
        name = topic(settings.kafka.topic_prefix, TOPIC_CONFIRMED)
        outcomes = [
            OrderConfirmed(
                order_id=o.order_id, event_id=o.event_id, partition=o.partition, buyer=o.buyer,
                tickets=tuple(TicketRef(tid(o.order_id, s.seat_id), s.seat_id) for s in o.seats),
                placed_at=o.placed_at, confirmed_at=o.placed_at,
            )
            for o in orders
        ]  # fmt: skip
        started = time.perf_counter()
        pending = [
            await broker.publish(encode(x), name, key=event_key(x.event_id), no_confirm=True)
            for x in outcomes
        ]
        await asyncio.gather(*pending)
        out["publish_s"] = time.perf_counter() - started
    finally:
        await broker.stop()
    client = await create_redis(settings)
    try:
        inventory = Inventory(client, settings.holds)
        started = time.perf_counter()
        # As the persister does: one script call per (event, partition) and chunk.
        groups: dict[tuple[int, int], list[tuple[str, list[str], str]]] = {}
        for o in orders:
            groups.setdefault((o.event_id, o.partition), []).append(
                (o.order_id, [s.seat_id for s in o.seats], o.buyer)
            )
        await asyncio.gather(
            *(inventory.mark_sold_many(ev, part, group) for (ev, part), group in groups.items())
        )
        out["mark_sold_s"] = time.perf_counter() - started
    finally:
        await client.aclose()
    return out


async def produce_orders(settings: Any, orders: list[Any]) -> None:
    from aiokafka import AIOKafkaProducer

    from core.orders import TOPIC_PLACED, encode, event_key, topic
    from workers.runtime import ensure_topics

    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap, acks="all", linger_ms=5,
        max_batch_size=1 << 20,
    )  # fmt: skip
    await producer.start()
    try:
        name = topic(settings.kafka.topic_prefix, TOPIC_PLACED)
        futures = [await producer.send(name, encode(o), key=event_key(o.event_id)) for o in orders]
        await producer.flush()
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def delete_topics(settings: Any) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    from workers.runtime import ALL_TOPICS

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        names = [f"{settings.kafka.topic_prefix}{t}" for t in ALL_TOPICS]
        existing = set(await admin.list_topics())
        gone = [n for n in names if n in existing]
        if gone:
            await admin.delete_topics(gone)
    finally:
        await admin.close()


# -- profile -----------------------------------------------------------------------------


def fold_profile(raw: Path, top: int = 15) -> dict[str, Any]:
    """Collapsed stacks from py-spy -> self time per function and per layer."""
    self_time: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        if not frames:
            continue
        total += count
        self_time[frames[-1]] += count
        layers[_layer(frames)] += count
    return {
        "samples": total,
        "self": [(f, n / total) for f, n in self_time.most_common(top)] if total else [],
        "layers": [(k, n / total) for k, n in layers.most_common()] if total else [],
    }


# A sample belongs to the innermost frame that names a part of the hold path (scanning
# from the innermost frame out), so a script-link frame under Inventory.hold counts as the
# hold's Redis call and one under the rate limiter as the limiter's. Samples in no part
# go to the innermost frame's library (second list).
_PARTS: tuple[tuple[str, str], ...] = (
    ("TokenVerifier._verify", "token check (api/auth/tokens.py + cryptography)"),
    ("RateLimiter.", "rate limit (leased GCRA budget)"),
    ("(core/inventory.py)", "the hold (inventory gateway + its script link, a Redis round trip)"),
    ("(logging/", "access log (a JSON line per request)"),
    ("(prometheus_client/", "Prometheus metrics"),
    ("sync_to_thread", "sync guard run in a thread pool (Litestar)"),
    ("(concurrent/futures/", "sync guard run in a thread pool (Litestar)"),
    ("resolve_dependencies", "dependency injection (Litestar, anyio task group)"),
    ("authorize_connection", "guards (Litestar)"),
    ("(msgspec", "msgspec (decode/encode)"),
)
_LIBRARIES: tuple[tuple[str, str], ...] = (
    ("(api/", "our middleware and handlers (api/)"),
    ("(litestar/", "Litestar (routing, middleware, response)"),
    ("(granian/", "Granian (server, ASGI bridge)"),
    ("(core/inventory_link.py)", "the script link (outside the calls above)"),
    ("(redis/", "redis-py (outside the calls above)"),
    ("(asyncio/", "asyncio / uvloop"),
    ("(anyio/", "anyio"),
)


def _layer(frames: list[str]) -> str:
    for table in (_PARTS, _LIBRARIES):
        for frame in reversed(frames):
            for needle, name in table:
                if needle in frame:
                    return name
    return "other (interpreter)"


def profile_hold_path(
    wrk: str, config: Config, base: str, server: Proc, event_id: int, files: tuple[Path, Path]
) -> dict[str, Any] | None:
    """py-spy on the API's process tree while wrk drives holds (a run of its own)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        return None
    raw = config.work / "profile.txt"
    cmd = [
        spy, "record", "--pid", str(server.popen.pid), "--subprocesses", "--gil", "--duration",
        str(config.profile_s), "--rate", "250", "--format", "raw", "--nolineno",
        "--output", str(raw),
    ]  # fmt: skip
    spy_proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)
    tokens, seats = files
    run_wrk(
        wrk, base, "holds.lua", [str(event_id), str(tokens), str(seats), "0"],
        connections=config.connections, duration_s=config.profile_s, server=server,
        target="profile",
    )  # fmt: skip
    try:
        spy_proc.wait(timeout=config.profile_s + 30)
    except subprocess.TimeoutExpired:
        spy_proc.kill()
    if not raw.exists():
        err = spy_proc.stderr.read().decode(errors="replace") if spy_proc.stderr else ""
        log(f"py-spy gave no profile: {err[-500:]}")
        return None
    folded = fold_profile(raw)
    folded["command"] = " ".join(["py-spy", "record", "--pid", "<api>", *cmd[4:]]).replace(
        str(config.work), ".tb/bench"
    )
    return folded


# -- WebSocket latency (area 7) and wire micro-benchmarks --------------------------------


def ws_latency(config: Config, base: str, env: dict[str, str]) -> dict[str, Any]:
    """Area 7's benchmark (loadtest/ws_latency.py) against the bench API, bounded here."""
    if not (ROOT / "loadtest" / "ws_latency.py").exists():
        return {"skipped": "loadtest/ws_latency.py is not in the tree yet"}
    quick_run = config.duration_s < 10
    flags = [
        "--url", urlsplit(base).netloc,
        "--max-clients", "100" if quick_run else "400",
        "--duration", "2" if quick_run else "3",
        "--budget-s", "30" if quick_run else "45",
    ]  # fmt: skip
    cmd = [sys.executable, "-m", "loadtest.ws_latency", *flags]
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240, check=False
    )
    last = next((ln for ln in reversed(done.stdout.splitlines()) if ln.startswith("{")), None)
    if done.returncode != 0 or last is None:
        tail = (done.stderr or done.stdout)[-600:]
        return {"skipped": f"ws_latency failed ({done.returncode}): {tail}"}
    data: dict[str, Any] = json.loads(last)
    shown = ["python", "-m", "loadtest.ws_latency", *flags]
    shown[4] = "127.0.0.1:PORT"
    data["command"] = "uv run " + " ".join(shown)
    return data


def wire_benchmarks(config: Config) -> dict[str, Any]:
    out = config.work / "wire.json"
    cmd = [
        sys.executable, "-m", "pytest", "tests/benchmarks", "-q",
        "--benchmark-enable", "--benchmark-min-rounds=20", "--benchmark-max-time=0.2",
        f"--benchmark-json={out}", "-p", "no:cacheprovider",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    if done.returncode != 0 or not out.exists():
        return {"skipped": f"pytest failed ({done.returncode}): {done.stdout[-600:]}"}
    data = json.loads(out.read_text())
    rows = [
        (b["name"], b["stats"]["median"] * 1e6, b["stats"]["ops"])
        for b in sorted(data["benchmarks"], key=lambda b: b["stats"]["median"])
    ]
    return {"rows": rows, "command": "uv run pytest tests/benchmarks --benchmark-enable"}


# -- machine -----------------------------------------------------------------------------


def _version(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "missing"
    text = (done.stdout or done.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def machine_info(dsn: str) -> dict[str, str]:
    from importlib.metadata import version

    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    pg = "unknown"
    with contextlib.suppress(Exception):
        import asyncpg

        async def _pg() -> str:
            conn = await asyncpg.connect(dsn)
            try:
                return str(await conn.fetchval("SHOW server_version"))
            finally:
                await conn.close()

        pg = asyncio.run(_pg())
    libs = ", ".join(
        f"{name} {version(name)}"
        for name in ("litestar", "granian", "redis", "msgspec", "asyncpg", "aiokafka")
    )
    load1, load5, _ = os.getloadavg()
    return {
        "cpu": f"{cpu}, {psutil.cpu_count()} cores",
        "load average at start (1 / 5 min)": f"{load1:.2f} / {load5:.2f} (the machine is shared)",
        "memory": f"{psutil.virtual_memory().total / 2**30:.0f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "redis": _version(["redis-server", "--version"]),
        "postgres": pg,
        "wrk": _version(["wrk", "-v"]),
        "libraries": libs,
    }


# -- the run -----------------------------------------------------------------------------


@dataclass
class Results:
    config: Config
    machine: dict[str, str] = field(default_factory=dict)
    started: str = ""
    elapsed_s: float = 0.0
    holds: dict[str, dict[str, HttpRun]] = field(default_factory=dict)
    orders: HttpRun | None = None
    redis: StorageCeiling | None = None
    postgres: StorageCeiling | None = None
    sellout: Sellout | None = None
    persister: PersisterFigures | None = None
    ws: dict[str, Any] = field(default_factory=dict)
    wire: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] | None = None
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def start_api(
    env: dict[str, str], logdir: Path, name: str = "ticketbuster-api", workers: int = 1
) -> tuple[Proc, str]:
    """The real API, started the real way (``python -m api``) on a free port."""
    port = free_port()
    proc = Proc(
        name,
        [sys.executable, "-m", "api"],
        {**env, "TB_API_PORT": str(port), "TB_API_WORKERS": str(workers)},
        logdir,
    )
    base = f"http://{HOST}:{port}"
    try:
        wait_until(lambda: (not proc.alive()) or http_ok(base + "/healthz"), "the API", 90)
    except RuntimeError:
        proc.stop()
        raise
    if not proc.alive():
        raise RuntimeError(f"the API exited at start:\n{proc.tail()}")
    return proc, base


def start_persister(env: dict[str, str], logdir: Path) -> Proc:
    proc = Proc(
        "persister",
        [sys.executable, "-m", "workers.persister"],
        {**env, "TB_WORKERS_PERSISTER_PORT": str(free_port())},
        logdir,
    )
    return proc


def run_sellout(
    wrk: str,
    config: Config,
    env: dict[str, str],
    settings: Any,
    events: BenchEvents,
    api: Proc,
    base: str,
    tokens: list[str],
) -> Sellout:
    event_id = events.ids["sellout"]
    seats = events.seats[event_id]
    chunk = config.sellout_chunk
    buyers = -(-len(seats) // chunk)
    work = config.work
    tokens_file = write_lines(work / "sellout-tokens.txt", tokens[:buyers])
    seats_file = write_lines(work / "sellout-seats.txt", [s for s, _ in seats])
    orders_file = work / "sellout-orders.txt"
    for f in (orders_file, Path(f"{orders_file}.finished")):
        f.unlink(missing_ok=True)
    persister = start_persister(env, work / "logs")
    time.sleep(3)  # let it join its group before the orders come
    try:
        api_cpu0, p_cpu0 = api.cpu_s(), persister.cpu_s()
        started = time.monotonic()
        run = run_wrk(
            wrk, base, "sellout.lua",
            [str(event_id), str(tokens_file), str(seats_file), str(chunk), str(orders_file), "2"],
            connections=config.sellout_connections, duration_s=config.sellout_cap_s, threads=2,
            server=api, target="sell-out", timeout="10s",
        )  # fmt: skip
        sold_out_s = time.monotonic() - started
        counts = asyncio.run(seat_status_counts(settings, event_id))
        sold = counts.get("sold", 0) + counts.get("pending", 0)
        log(f"sell-out: wrk done in {sold_out_s:.1f}s; Redis {counts}")
        in_pg_s, _tickets, _trace = asyncio.run(
            wait_for_tickets(env["TB_DATABASE_URL"], event_id, sold, config.drain_cap_s, started)
        )
        api_cpu, p_cpu = api.cpu_s() - api_cpu0, persister.cpu_s() - p_cpu0
    finally:
        persister.stop()
    order_ids = []
    if orders_file.exists():
        order_ids = [ln for ln in orders_file.read_text().splitlines() if ln]
    checks = asyncio.run(sellout_checks(env["TB_DATABASE_URL"], event_id, order_ids))
    counts = asyncio.run(seat_status_counts(settings, event_id))
    decided = checks["decided"]
    return Sellout(
        event_id=event_id,
        seats=len(seats),
        buyers=buyers,
        connections=config.sellout_connections,
        chunk=chunk,
        wrk=run,
        sold_out_s=run.duration_s,
        in_postgres_s=in_pg_s,
        redis_counts=counts,
        tickets=checks["tickets"],
        accepted=len(order_ids),
        decided=decided,
        missing_orders=len(order_ids) - sum(decided.values()),
        oversold=checks["oversold"],
        confirmed_seats=checks["confirmed_seats"],
        confirmed_distinct_seats=checks["confirmed_distinct_seats"],
        api_cpu_s=api_cpu,
        persister_cpu_s=p_cpu,
        command=(
            f"wrk -t2 -c{config.sellout_connections} -d{config.sellout_cap_s}s --timeout 10s "
            f"-s loadtest/wrk/sellout.lua API -- EVENT TOKENS SEATS {chunk} OUT 2"
        ),
    )


def run_persister(
    config: Config, env: dict[str, str], settings: Any, events: BenchEvents
) -> PersisterFigures:
    dsn = env["TB_DATABASE_URL"]
    event_id = events.ids["persister"]
    seats = events.seats[event_id]
    prices = asyncio.run(event_prices(dsn, event_id))
    chunk = config.sellout_chunk
    orders = synthetic_orders(event_id, seats, prices, chunk, config.persister_orders)
    figures = PersisterFigures(
        orders=len(orders), tickets=len(orders) * chunk, worker_s=None,
        worker_steady_tps=None, batched_tps=None, large_batch_tps=None, one_by_one_tps=None,
        one_by_one_orders=0, worker_cpu_s=0.0,
    )  # fmt: skip
    n, elapsed = asyncio.run(write_one_by_one(dsn, orders, config.one_by_one_cap_s))
    figures.one_by_one_orders = n
    figures.one_by_one_tps = n * chunk / elapsed
    log(f"persister order by order: {n} orders in {elapsed:.1f}s")
    asyncio.run(delete_orders(dsn))
    elapsed = asyncio.run(write_in_batches(dsn, orders, settings.workers.batch_max_records))
    figures.batched_tps = len(orders) * chunk / elapsed
    log(f"persister batched write: {len(orders)} orders in {elapsed:.1f}s")
    asyncio.run(delete_orders(dsn))
    # Does a bigger transaction help? The same write, LARGE_BATCH orders at a time.
    elapsed = asyncio.run(write_in_batches(dsn, orders, LARGE_BATCH))
    figures.large_batch_tps = len(orders) * chunk / elapsed
    log(f"persister batched write ({LARGE_BATCH}): {len(orders)} orders in {elapsed:.1f}s")
    asyncio.run(delete_orders(dsn))
    # One batch taken apart, on the seats of the holds event (reset first).
    hold_event = events.ids["holds"]
    asyncio.run(reset_inventory(settings, hold_event, events.seats[hold_event]))
    sample = synthetic_orders(
        hold_event, events.seats[hold_event], prices, chunk, settings.workers.batch_max_records
    )
    sample = asyncio.run(confirm_in_redis(settings, sample))
    figures.batch = asyncio.run(batch_breakdown(dsn, settings, sample))
    log(f"persister batch breakdown: {figures.batch}")
    asyncio.run(delete_orders(dsn))
    # The worker, end to end: a backlog in Kafka, then start it and time the drain.
    prepared = time.perf_counter()
    orders = asyncio.run(confirm_in_redis(settings, orders))
    asyncio.run(produce_orders(settings, orders))
    log(
        f"persister backlog: {len(orders)} orders confirmed in Redis and published in "
        f"{time.perf_counter() - prepared:.1f}s"
    )
    persister = start_persister(env, config.work / "logs")
    started = time.monotonic()
    try:
        drained_s, tickets, trace = asyncio.run(
            wait_for_tickets(dsn, event_id, figures.tickets, config.drain_cap_s, started)
        )
        figures.worker_cpu_s = persister.cpu_s()
    finally:
        persister.stop()
    figures.worker_s = drained_s
    # Steady rate: from the first ticket row to the last (excludes start-up and group join).
    moving = [(t, n) for t, n in trace if n > 0]
    if len(moving) >= 2 and moving[-1][1] > moving[0][1]:
        (t0, n0), (t1, n1) = moving[0], moving[-1]
        figures.worker_steady_tps = (n1 - n0) / (t1 - t0) if t1 > t0 else None
    if drained_s is None:
        figures.notes.append(f"the worker wrote {tickets} of {figures.tickets} tickets in time")
    log(f"persister worker: {tickets} tickets, drained in {drained_s}s")
    return figures


def cleanup_step(action: Any) -> None:
    """One clean-up action; a failure is logged, the others still run."""
    try:
        action()
    except Exception as exc:
        log(f"clean-up failed: {type(exc).__name__}: {exc}")


@contextlib.contextmanager
def step(results: Results, name: str) -> Iterator[None]:
    """Run one step; if it fails, say why in the report and go on with the next."""
    try:
        yield
    except Exception as exc:
        text = str(exc).strip()
        reason = f"{type(exc).__name__}: {text.splitlines()[-1][:300] if text else ''}"
        results.skipped[name] = reason
        log(f"step {name} failed: {reason}")


def headline(results: Results) -> dict[str, float]:
    """The hold path against the empty endpoint, in this run (1 worker each, -c64): holds/s
    as a share of empty requests/s, and server CPU per hold in empty requests."""
    empty = results.holds.get("empty", {}).get("peak")
    tb = results.holds.get("ticketbuster", {})
    out: dict[str, float] = {}
    if empty is None or not empty.requests:
        return out
    empty_cpu = empty.server_cpu_s / empty.requests
    for label, key in (("new buyers", "peak"), ("returning buyers", "returning")):
        run = tb.get(key)
        if run is None or not run.requests or not empty.rps:
            continue
        out[f"{label}: holds/s ÷ empty req/s"] = run.ok_per_s() / empty.rps
        if empty_cpu:
            out[f"{label}: CPU per hold ÷ CPU per empty request"] = (
                run.server_cpu_s / run.requests / empty_cpu
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, a small sell-out")
    parser.add_argument(
        "--only",
        default="",
        help="comma list of steps: empty,naive,ticketbuster,profile,ws,workers,orders,sellout,"
        "persister,redis,postgres,wire",
    )
    parser.add_argument("--keep", action="store_true", help="keep the bench database")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    config = quick(Config()) if args.quick else Config()
    config.keep = args.keep
    config.only = {s.strip() for s in args.only.split(",") if s.strip()}
    config.work.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    results = Results(config=config, started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))

    from core import devservices
    from core.settings import load_settings

    log("servers: python -m core.devservices up")
    dev_env = devservices.up()
    base_env = {**os.environ, **dev_env}
    base_settings = load_settings(base_env)
    dsn = bench_dsn(base_settings.database.url)
    tag = secrets.token_hex(3)
    env = {
        **base_env,
        "TB_ENV": "dev",
        "TB_AUTH_DEV_ISSUER_ENABLED": "true",  # the bench's buyers sign in with it
        "TB_DATABASE_URL": dsn,
        "TB_KAFKA_TOPIC_PREFIX": f"bench{tag}.",
        # Every request comes from 127.0.0.1: lift the per-IP limit, keep the limiter.
        "TB_API_RATE_LIMIT_PER_IP": "1000000000",
        "TB_API_WORKERS": "1",
        # 3,500 returning buyers x 12 seats: enough for a 10 s run at the rates seen here
        # (at the default 6 the run ran out of seats to hold and measured 429s instead).
        "TB_HOLDS_MAX_SEATS_PER_BUYER": str(RETURNING_SEATS_PER_BUYER),
    }
    for worker in ("persister", "issuer", "notifier", "expirer"):
        env[f"TB_WORKERS_{worker.upper()}_PORT"] = str(free_port())
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    settings = load_settings(env)
    results.machine = machine_info(base_settings.database.url)
    wrk = ensure_wrk()
    if wrk is None:
        results.notes.append("wrk is missing (not root, or apt failed): HTTP runs skipped")

    log(f"bench database {urlsplit(dsn).path.lstrip('/')}; seeding copies of {SELLOUT_TITLE}")
    asyncio.run(recreate_database(dsn))
    events = asyncio.run(seed_bench_events(dsn, settings, config.sellout_seats))
    log(f"bench events: {events.ids}")
    logdir = config.work / "logs"
    try:
        hold_event = events.ids["holds"]
        hold_seats = events.seats[hold_event]
        sellout_buyers = -(-len(events.seats[events.ids["sellout"]]) // config.sellout_chunk)
        n_hold_tokens = 5_000 if args.quick else 20_000
        minted = time.perf_counter()
        tokens, public_jwk = asyncio.run(
            mint_tokens(settings, f"bench-{tag}-", n_hold_tokens + sellout_buyers)
        )
        log(f"minted {len(tokens)} tokens in {time.perf_counter() - minted:.1f}s")
        files = (
            write_lines(config.work / "hold-tokens.txt", tokens[:n_hold_tokens]),
            write_lines(config.work / "hold-seats.txt", [s for s, _ in hold_seats]),
        )
        sellout_tokens = tokens[n_hold_tokens:]
        # Buyers who come back: few enough that their tokens stay in the API's cache (4,096),
        # enough for a run (6 seats each under the per-buyer limit).
        returning = (
            write_lines(config.work / "returning-tokens.txt", tokens[:RETURNING_BUYERS]),
            files[1],
        )
        # Everyone after the same front-row seats: the flash-sale minute.
        hot = (
            files[0],
            write_lines(config.work / "hot-seats.txt", [s for s, _ in hold_seats[:HOT_SEATS]]),
        )

        if wrk and config.wants("empty"):
            with step(results, "empty"):
                proc, base = start_server(
                    "framework-ceiling", "loadtest.framework_ceiling:create_app", env, logdir
                )
                try:
                    results.holds["empty"] = hold_runs(
                        wrk, config, "empty endpoint", base, proc, hold_event, files,
                        lambda: None, paced=False,
                    )  # fmt: skip
                finally:
                    proc.stop()

        if wrk and config.wants("naive"):
            with step(results, "naive"):
                from loadtest.naive_baseline import prepare_event

                def reset_naive() -> None:
                    asyncio.run(prepare_event(dsn, hold_event, hold_seats))

                reset_naive()
                naive_env = {**env, "TB_NAIVE_JWK": json.dumps(public_jwk)}
                proc, base = start_server(
                    "naive-baseline", "loadtest.naive_baseline:create_app", naive_env, logdir
                )
                try:
                    results.holds["naive"] = hold_runs(
                        wrk, config, "naive baseline", base, proc, hold_event, files,
                        reset_naive, paced=True, hot=hot,
                    )  # fmt: skip
                finally:
                    proc.stop()

        need_api = {"ticketbuster", "profile", "ws"}
        if wrk and (not config.only or config.only & need_api):
            with step(results, "api"):
                api, base = start_api(env, logdir)
                try:

                    def reset_tb() -> None:
                        asyncio.run(reset_inventory(settings, hold_event, hold_seats))

                    if config.wants("ticketbuster"):
                        with step(results, "ticketbuster"):
                            results.holds["ticketbuster"] = hold_runs(
                                wrk, config, "TicketBuster", base, api, hold_event, files,
                                reset_tb, paced=True, returning=returning, hot=hot,
                            )  # fmt: skip
                    if config.wants("profile"):
                        with step(results, "profile"):
                            reset_tb()
                            results.profile = profile_hold_path(
                                wrk, config, base, api, hold_event, files
                            )
                    if config.wants("ws"):
                        with step(results, "ws"):
                            results.ws = ws_latency(config, base, env)
                            log(f"ws latency: {results.ws.get('largest_n', results.ws)}")
                finally:
                    api.stop()

        # The API as make dev and the k8s pod run it: one worker per core.
        need_full = {"workers", "orders", "sellout"}
        if wrk and (not config.only or config.only & need_full):
            with step(results, "api, 2 workers"):
                n = API_WORKERS_FULL
                api, base = start_api(env, logdir, f"ticketbuster-api-{n}w", workers=n)
                try:

                    def reset_full() -> None:
                        asyncio.run(reset_inventory(settings, hold_event, hold_seats))

                    if config.wants("workers"):
                        with step(results, "workers"):
                            results.holds["ticketbuster_2w"] = hold_runs(
                                wrk, config, f"TicketBuster {n} workers", base, api,
                                hold_event, files, reset_full, paced=True, hot=hot,
                            )  # fmt: skip
                    if config.wants("orders"):
                        with step(results, "orders"):
                            subs = [f"bench-{tag}-{i}" for i in range(n_hold_tokens)]
                            results.orders = orders_run(
                                wrk, config, base, api, settings, hold_event, hold_seats,
                                list(zip(subs, tokens[:n_hold_tokens], strict=True)), 1,
                            )  # fmt: skip
                    if config.wants("sellout"):
                        with step(results, "sellout"):
                            results.sellout = run_sellout(
                                wrk, config, env, settings, events, api, base, sellout_tokens
                            )
                finally:
                    api.stop()

        if config.wants("persister"):
            with step(results, "persister"):
                results.persister = run_persister(config, env, settings, events)
        if config.wants("redis"):
            with step(results, "redis"):
                results.redis = redis_ceiling(config)
                r = results.redis
                log(f"redis ceiling: {r.rps:,.0f} EVALSHA/s, {r.ok_fraction:.0%} held")
        if config.wants("postgres"):
            with step(results, "postgres"):
                results.postgres = pg_ceiling(config, dsn)
                r = results.postgres
                log(f"postgres ceiling: {r.rps:,.0f} hold tx/s, {r.ok_fraction:.0%} held")
        if config.wants("wire"):
            with step(results, "wire"):
                results.wire = wire_benchmarks(config)
    finally:
        log("cleaning up: bench inventory, topics" + ("" if config.keep else ", database"))
        cleanup_step(lambda: asyncio.run(drop_inventory(settings, list(events.ids.values()))))
        cleanup_step(lambda: asyncio.run(delete_topics(settings)))
        if not config.keep:
            cleanup_step(lambda: asyncio.run(drop_database(dsn)))
        results.elapsed_s = time.monotonic() - t0
        load1, load5, _ = os.getloadavg()
        results.machine["load average at the end (1 / 5 min)"] = f"{load1:.2f} / {load5:.2f}"
        for name, value in headline(results).items():
            shown = f"{100 * value:.1f}%" if "÷ empty" in name else f"{value:.2f}x"
            log(f"headline: {name} = {shown}")
        (config.work / "results.json").write_text(
            json.dumps(dataclasses.asdict(results), default=str, indent=1)
        )
        if not config.only:
            from loadtest.bench_report import write_report

            write_report(results, args.out)
            log(f"wrote {args.out}")
        else:
            log("--only: docs/BENCHMARKS.md left as it is (a partial run is not the record)")
    log(f"done in {results.elapsed_s:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
