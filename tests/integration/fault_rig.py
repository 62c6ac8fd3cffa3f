"""The fault suite's rig: a whole TicketBuster on servers of its own, and a bounded sale.

``Rig`` starts, with ``core.devservices``' own starting code, a private Redis Cluster
(3 primaries, 3 replicas), a private Tansu broker and, when asked, a private PostgreSQL,
on ports of the suite's range (never the shared dev servers, which other runs use: these
ones get killed, paused and restarted). Then it migrates a database with the real runner,
seeds one event, and runs the real processes (``python -m api``, the persister, issuer,
notifier and expirer), each in its own process group, stopped by its pid.

``run_sale`` is a bounded sale at load: buyers hold one seat each (explicit seats taken
in turn) and buy it at once, for ``duration_s``, while ``fault`` runs beside them. Every
answer is recorded with its time. ``verdict`` then waits (bounded) until every 202 is
decided in PostgreSQL and reports oversold seats, 202s lost, 202s rejected later, holds
lost, and the time from the fault to the first hold served after the last failed one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import msgspec

from core import devservices
from core.inventory import partition_tag
from core.inventory_link import key_slot
from core.settings import Settings, load_settings
from loadtest.bench import Proc, mint_tokens, sellout_checks
from tests.integration.catalog_seed import cluster_client, seed_test_event

REPO = Path(__file__).resolve().parents[2]
HOST = devservices.HOST
# The suite's own port range (docs/RELIABILITY.md): Redis 7200-7299, broker 19100-19199,
# PostgreSQL 55400-55499, API and workers 8200-8299. Each module takes one ``slot``.
REDIS_BASE, KAFKA_BASE, PG_BASE, HTTP_BASE = 7200, 19100, 55400, 8200

WORKERS = ("persister", "issuer", "notifier", "expirer")


def _redis_cli(port: int, *args: str) -> str:
    return devservices._redis_cli(port, *args)


@dataclass
class Rig:
    slot: int
    work: Path
    postgres: bool = False
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    event_id: int = 0
    seats: list[str] = field(default_factory=list)
    category: str = ""
    layout: devservices.Layout | None = None
    dsn: str = ""
    api_port: int = 0
    # Where the next sale starts in the seat list (sales of one rig take fresh seats).
    seat_cursor: int = 0

    # -- servers --------------------------------------------------------------------------

    def start_servers(self) -> None:
        pg_port = PG_BASE + self.slot
        self.layout = devservices.Layout(
            state=self.work / "state",
            redis_port=REDIS_BASE + 10 * self.slot,
            pg_port=pg_port,
            kafka_port=KAFKA_BASE + self.slot,
            # Pointing at the private server's own address makes devservices start it.
            database_url=f"postgresql://postgres@{HOST}:{pg_port}/ticketbuster"
            if self.postgres
            else os.environ.get("TB_DATABASE_URL"),
        )
        self.layout.state.mkdir(parents=True, exist_ok=True)
        devservices.redis_up(self.layout)
        bootstrap = devservices.kafka_up(self.layout)
        base_url = devservices.postgres_up(self.layout)
        name = f"tb_faults_{uuid.uuid4().hex[:8]}"
        self.dsn = base_url.rsplit("/", 1)[0] + f"/{name}"
        asyncio.run(_admin(base_url, f'CREATE DATABASE "{name}"'))
        nodes = ",".join(f"{HOST}:{p}" for p in self.layout.redis_ports)
        self.api_port = HTTP_BASE + 10 * self.slot
        self.env = {
            "TB_ENV": "test",
            "TB_AUTH_DEV_ISSUER_ENABLED": "true",
            "TB_DATABASE_URL": self.dsn,
            "TB_REDIS_CLUSTER_NODES": nodes,
            "TB_KAFKA_BOOTSTRAP": bootstrap,
            "TB_KAFKA_TOPIC_PREFIX": f"faults{self.slot}.",
            "TB_TICKETS_SIGNING_KEY_PATH": str(self.work / "ticket-key.pem"),
            "TB_API_HOST": HOST,
            "TB_API_PORT": str(self.api_port),
            "TB_API_WORKERS": "1",
            # The limiter runs (its Redis calls are part of every request), with budgets
            # no buyer of the sale reaches.
            "TB_API_RATE_LIMIT_PER_USER": "1000000",
            "TB_API_RATE_LIMIT_PER_IP": "1000000",
            "TB_HOLDS_ATTEMPTS_PER_MINUTE": "0",
            "TB_HOLDS_MAX_SEATS_PER_BUYER": "1000",
            # A 202 whose record never reached the broker is re-published within seconds.
            "TB_WORKERS_RECONCILE_GRACE_S": "5",
            "TB_WORKERS_RECONCILE_INTERVAL_S": "2",
            "TB_WORKERS_SWEEP_INTERVAL_S": "2",
        }
        for i, name in enumerate(WORKERS, start=1):
            self.env[f"TB_WORKERS_{name.upper()}_PORT"] = str(self.api_port + i)

    @property
    def settings(self) -> Settings:
        return load_settings(self.env)

    def seed(self, capacity: int) -> None:
        from migrations.runner import migrate

        async def go() -> None:
            await migrate(self.dsn)
            client = cluster_client(self.env["TB_REDIS_CLUSTER_NODES"])
            try:
                self.event_id, seats = await seed_test_event(
                    self.dsn,
                    client,
                    name="Fault sale",
                    address="Loopback 20",
                    days_ahead=30,
                    base_price_minor=4_000,
                    capacity=capacity,
                )
            finally:
                await client.aclose()
            self.seats = sorted(seats)

        asyncio.run(go())

    def stop_servers(self) -> None:
        if self.layout is None:
            return
        with contextlib.suppress(Exception):
            devservices._stop_pid(self.layout.state / "kafka" / "tansu.pid", "tansu")
        with contextlib.suppress(Exception):
            devservices._redis_stop_all(self.layout)
        if self.postgres:
            with contextlib.suppress(Exception):
                devservices.postgres_down(self.layout)
            shutil.rmtree(devservices._pg_dir(self.layout), ignore_errors=True)

    # -- processes ------------------------------------------------------------------------

    def start(self, name: str, extra_env: dict[str, str] | None = None) -> Proc:
        module = "api" if name == "api" else f"workers.{name}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TB_")}
        env.update(self.env)
        env.update(extra_env or {})
        proc = Proc(name, [sys.executable, "-m", module], env, self.work / "logs")
        self.procs[name] = proc
        self.wait_healthy(name)
        return proc

    def port_of(self, name: str) -> int:
        return int(self.env["TB_API_PORT" if name == "api" else f"TB_WORKERS_{name.upper()}_PORT"])

    def wait_healthy(self, name: str, timeout_s: float = 60.0) -> float:
        """Seconds until ``name`` answers /healthz; fails with its log if it dies or never does."""
        started = time.monotonic()
        url = f"http://{HOST}:{self.port_of(name)}/healthz"
        while time.monotonic() - started < timeout_s:
            proc = self.procs[name]
            if not proc.alive():
                raise RuntimeError(f"{name} exited:\n{proc.tail(40)}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url, timeout=1.0).status_code == 200:
                    return time.monotonic() - started
            time.sleep(0.1)
        raise TimeoutError(f"{name} not healthy in {timeout_s}s:\n{self.procs[name].tail(40)}")

    def kill(self, name: str) -> None:
        """SIGKILL the process group of ``name`` (no cleanup, as an OOM kill)."""
        proc = self.procs[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGKILL)
        proc.popen.wait(timeout=10)
        proc.stop()

    def start_system(self, names: tuple[str, ...] = ("api", *WORKERS)) -> None:
        for name in names:
            self.start(name)

    def stop_system(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    # -- Redis topology -------------------------------------------------------------------

    def event_slot(self) -> int:
        return key_slot(partition_tag(self.event_id, 0).encode())

    def primary_of_event(self) -> int:
        """The port of the primary serving the event's partition."""
        slot = self.event_slot()
        assert self.layout is not None
        nodes = ""
        for port in self.layout.redis_ports:  # any node that answers knows the map
            with contextlib.suppress(Exception):
                nodes = _redis_cli(port, "cluster", "nodes")
            if "myself" in nodes:
                break
        for line in nodes.splitlines():
            parts = line.split()
            if "master" not in parts[2] or "fail" in parts[2]:
                continue
            for rng in parts[8:]:
                if rng.startswith("["):
                    continue
                lo, _, hi = rng.partition("-")
                if int(lo) <= slot <= int(hi or lo):
                    return int(parts[1].split("@")[0].rsplit(":", 1)[1])
        raise AssertionError(f"no primary serves slot {slot}:\n{nodes}")

    def replica_of(self, primary_port: int) -> int:
        nodes = _redis_cli(primary_port, "cluster", "nodes")
        me = next(ln.split()[0] for ln in nodes.splitlines() if "myself" in ln)
        for line in nodes.splitlines():
            parts = line.split()
            if "slave" in parts[2] and parts[3] == me and "fail" not in parts[2]:
                return int(parts[1].split("@")[0].rsplit(":", 1)[1])
        raise AssertionError(f"primary {primary_port} has no replica:\n{nodes}")

    def kill_redis(self, port: int) -> None:
        assert self.layout is not None
        pid = devservices._read_pid(devservices._redis_dir(self.layout, port) / "redis.pid")
        assert pid is not None, f"redis {port} is not running"
        os.kill(pid, signal.SIGKILL)

    def restart_redis(self, port: int) -> None:
        """Start a killed node again on its own data folder: it rejoins as a replica."""
        assert self.layout is not None
        devservices._redis_start_node(self.layout, port)
        devservices._wait(lambda: devservices._cluster_healthy(self.layout), "cluster", 30)

    # -- broker and PostgreSQL ------------------------------------------------------------

    def broker_pid(self) -> int:
        assert self.layout is not None
        pid = devservices._read_pid(self.layout.state / "kafka" / "tansu.pid")
        assert pid is not None
        return pid

    def restart_broker(self, down_s: float = 0.0) -> None:
        """Stop the broker, wait, start it again.

        The dev broker is memory-only, so a restart loses its topics, their records and
        the groups' offsets (a Kafka restart keeps all three). The topics are made again
        at once, as the topic operator (Strimzi) does for a real cluster; the records lost
        are what the reconciler re-publishes from the buyers' pending records.
        """
        from workers.runtime import ensure_topics

        assert self.layout is not None
        devservices._stop_pid(self.layout.state / "kafka" / "tansu.pid", "tansu")
        time.sleep(down_s)
        devservices.kafka_up(self.layout)
        asyncio.run(ensure_topics(self.settings))

    def restart_postgres(self, down_s: float = 0.0) -> None:
        assert self.layout is not None and self.postgres
        devservices.postgres_down(self.layout)
        time.sleep(down_s)
        devservices.postgres_up(self.layout)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        conn = await asyncpg.connect(self.dsn)
        try:
            return list(await conn.fetch(sql, *args))
        finally:
            await conn.close()


async def _admin(url: str, sql: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    conn = await asyncpg.connect(urlunsplit(urlsplit(url)._replace(path="/postgres")))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def rig(slot: int, capacity: int, postgres: bool = False) -> Iterator[Rig]:
    """Servers, database, event and the whole system; everything stopped afterwards."""
    work = Path(tempfile.mkdtemp(prefix=f"tb-faults-{slot}-"))
    r = Rig(slot=slot, work=work, postgres=postgres)
    try:
        r.start_servers()
        r.seed(capacity)
        r.start_system()
        yield r
    except BaseException:
        for proc in r.procs.values():
            sys.stderr.write(f"--- {proc.name} ---\n{proc.tail(30)}\n")
        raise
    finally:
        r.stop_system()
        r.stop_servers()
        # The processes' logs stay (git-ignored) for a look after a failure.
        kept = REPO / ".tb" / "faults-logs" / str(slot)
        shutil.rmtree(kept, ignore_errors=True)
        with contextlib.suppress(OSError):
            shutil.copytree(work / "logs", kept)
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------- the sale


@dataclass
class Answer:
    at: float  # seconds since the sale started
    kind: str  # "hold" or "order"
    status: int  # 0: no answer (connection failed, or none within the client timeout)
    elapsed: float
    retry_after: str | None = None
    seat: str = ""
    order_id: str = ""
    hung: bool = False


@dataclass
class Sale:
    started: float = 0.0
    fault_at: float | None = None  # seconds since the sale started
    fault_end: float | None = None
    answers: list[Answer] = field(default_factory=list)
    accepted: dict[str, str] = field(default_factory=dict)  # order id -> seat
    accepted_at: dict[str, float] = field(default_factory=dict)
    lost_holds: list[str] = field(default_factory=list)  # held (201), then unknown to order

    def now(self) -> float:
        return time.monotonic() - self.started

    def mark_fault(self) -> None:
        self.fault_at = self.now()

    def mark_fault_end(self) -> None:
        self.fault_end = self.now()

    def _calm(self) -> list[Answer]:
        """202s answered before the fault (or all of them without one)."""
        end = self.fault_at if self.fault_at is not None else float("inf")
        return [a for a in self.answers if a.kind == "order" and a.status == 202 and a.at < end]

    def order_latency_ms(self) -> tuple[float | None, float | None]:
        """p50 and p99 of the 202s before the fault, in ms."""
        times = sorted(a.elapsed for a in self._calm())
        if not times:
            return None, None
        pick = lambda q: round(times[min(len(times) - 1, int(q * len(times)))] * 1000, 1)  # noqa: E731
        return pick(0.5), pick(0.99)

    def orders_per_s(self) -> float | None:
        calm = self._calm()
        span = self.fault_at if self.fault_at is not None else max((a.at for a in calm), default=0)
        return round(len(calm) / span, 1) if calm and span else None

    def statuses(self, kind: str) -> Counter[int]:
        return Counter(a.status for a in self.answers if a.kind == kind)

    def recovery_s(self, kind: str = "hold") -> float | None:
        """From the fault to the first success after the last failed answer (0: none failed)."""
        assert self.fault_at is not None
        ok = {"hold": (201, 409), "order": (202,)}[kind]
        after = sorted((a for a in self.answers if a.kind == kind), key=lambda a: a.at + a.elapsed)
        failed = [a.at + a.elapsed for a in after if a.status not in ok]
        if not failed:
            return 0.0
        last = max(failed)
        firsts = [a.at + a.elapsed for a in after if a.status in ok and a.at + a.elapsed > last]
        return (min(firsts) - self.fault_at) if firsts else None


async def run_sale(
    r: Rig,
    duration_s: float,
    fault: Callable[[Sale], Awaitable[None]] | None = None,
    buyers: int = 16,
    client_timeout_s: float = 20.0,
) -> Sale:
    """``buyers`` concurrent clients hold and buy one seat at a time for ``duration_s``;
    ``fault(sale)`` runs beside them (it marks when its fault starts). An order answered
    503 or not at all is retried with the same Idempotency-Key, as a client would."""
    tokens, _ = await mint_tokens(r.settings, f"fault-{uuid.uuid4().hex[:6]}-", buyers)
    sale = Sale(started=time.monotonic())
    start = r.seat_cursor % len(r.seats)
    seats = itertools.cycle(r.seats[start:] + r.seats[:start])
    taken = itertools.count()
    base = f"http://{HOST}:{r.api_port}"
    limits = httpx.Limits(max_connections=buyers * 2, max_keepalive_connections=buyers * 2)
    deadline = sale.started + duration_s

    async with httpx.AsyncClient(base_url=base, timeout=client_timeout_s, limits=limits) as http:

        async def call(kind: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
            at = sale.now()
            t0 = time.monotonic()
            try:
                resp = await http.post(path, json=body, headers=headers)
            except httpx.TimeoutException:
                sale.answers.append(Answer(at, kind, 0, time.monotonic() - t0, hung=True))
                return None
            except httpx.HTTPError:
                sale.answers.append(Answer(at, kind, 0, time.monotonic() - t0))
                return None
            ans = Answer(at, kind, resp.status_code, time.monotonic() - t0)
            ans.retry_after = resp.headers.get("retry-after")
            sale.answers.append(ans)
            return resp

        async def buyer(i: int) -> None:
            auth = {"Authorization": f"Bearer {tokens[i]}"}
            while time.monotonic() < deadline:
                seat = next(seats)
                r.seat_cursor = start + next(taken) + 1
                resp = await call(
                    "hold", f"/api/v1/events/{r.event_id}/holds", {"seats": [seat]}, auth
                )
                if resp is None or resp.status_code != 201:
                    if resp is None or resp.status_code >= 500:
                        await asyncio.sleep(0.05)
                    continue
                sale.answers[-1].seat = seat
                hold_id = resp.json()["hold_id"]
                key = uuid.uuid4().hex
                # A client keeps trying its purchase (same key) a while past the sale's end.
                until = time.monotonic() + 30
                while time.monotonic() < until:
                    order = await call(
                        "order",
                        "/api/v1/orders",
                        {"hold_id": hold_id},
                        {**auth, "Idempotency-Key": key},
                    )
                    if order is not None and order.status_code == 202:
                        oid = order.json()["order_id"]
                        sale.answers[-1].order_id = oid
                        sale.accepted[oid] = seat
                        sale.accepted_at[oid] = sale.now()
                        break
                    if order is not None and order.status_code in (404, 410):
                        sale.lost_holds.append(hold_id)
                        break
                    if order is not None and order.status_code < 500:
                        break
                    await asyncio.sleep(0.2)

        tasks = [asyncio.ensure_future(buyer(i)) for i in range(buyers)]
        fault_task = asyncio.ensure_future(fault(sale)) if fault else None
        await asyncio.gather(*tasks)
        if fault_task is not None:
            await fault_task
    return sale


@dataclass
class Verdict:
    accepted: int
    decided: dict[str, int]
    undecided: int  # 202s not decided in PostgreSQL in time: lost
    oversold: int
    rejected_reasons: dict[str, int]
    tickets: int
    decided_in_s: float | None


async def verdict(r: Rig, sale: Sale, within_s: float = 60.0) -> Verdict:
    """Wait (at most ``within_s``) until every 202 of the sale is decided in PostgreSQL."""
    ids = list(sale.accepted)
    started = time.monotonic()
    decided_in: float | None = None
    while True:
        rows = await r.fetch(
            "SELECT count(*) AS n FROM orders.orders WHERE order_id = ANY($1::uuid[])"
            " AND status IN ('confirmed', 'rejected')",
            ids,
        )
        if int(rows[0]["n"]) == len(ids):
            decided_in = time.monotonic() - started
            break
        if time.monotonic() - started > within_s:
            break
        await asyncio.sleep(0.25)
    checks = await sellout_checks(r.dsn, r.event_id, ids)
    reasons = await r.fetch(
        "SELECT coalesce(reason, '') AS reason, count(*) AS n FROM orders.orders"
        " WHERE order_id = ANY($1::uuid[]) AND status = 'rejected' GROUP BY 1",
        ids,
    )
    decided = checks["decided"]
    return Verdict(
        accepted=len(ids),
        decided=decided,
        undecided=len(ids) - sum(n for s, n in decided.items() if s in ("confirmed", "rejected")),
        oversold=checks["oversold"],
        rejected_reasons={row["reason"]: int(row["n"]) for row in reasons},
        tickets=checks["tickets"],
        decided_in_s=decided_in,
    )


def report(name: str, sale: Sale, v: Verdict, **extra: Any) -> str:
    """One line of figures for the log (and docs/RELIABILITY.md)."""
    holds, orders = sale.statuses("hold"), sale.statuses("order")
    hung = sum(a.hung for a in sale.answers)
    rec = sale.recovery_s("hold") if sale.fault_at is not None else None
    line = (
        f"FAULT {name}: holds {dict(sorted(holds.items()))} orders {dict(sorted(orders.items()))}"
        f" accepted {v.accepted} decided {v.decided} undecided {v.undecided}"
        f" oversold {v.oversold} rejected {v.rejected_reasons} lost_holds {len(sale.lost_holds)}"
        f" hung {hung} hold_recovery_s {rec if rec is None else round(rec, 2)}"
        f" decided_in_s {v.decided_in_s if v.decided_in_s is None else round(v.decided_in_s, 1)}"
    )
    p50, p99 = sale.order_latency_ms()
    line += f" order_p50_ms {p50} order_p99_ms {p99} orders_per_s {sale.orders_per_s()}"
    for k, val in extra.items():
        line += f" {k} {val}"
    print(line, flush=True)
    with contextlib.suppress(OSError), open(REPO / ".tb" / "faults.log", "a") as out:
        out.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")
    return line


async def undecided_detail(r: Rig, sale: Sale, limit: int = 8) -> list[str]:
    """Where each 202 not decided in PostgreSQL stands in Redis, for a failure's message:
    the seat's state, the partition's order record and the buyer's pending record."""
    from core.inventory import KEY_NAMES, partition_keys
    from core.orders import pending_orders_key

    ids = list(sale.accepted)
    rows = await r.fetch("SELECT order_id FROM orders.orders WHERE order_id = ANY($1::uuid[])", ids)
    known = {str(row["order_id"]) for row in rows}
    keys = partition_keys(r.event_id, 0)
    state_key, orders_key = keys[KEY_NAMES.index("state")], keys[KEY_NAMES.index("orders")]
    client = cluster_client(r.env["TB_REDIS_CLUSTER_NODES"])
    lines = []
    try:
        for oid in [i for i in ids if i not in known][:limit]:
            seat = sale.accepted[oid]
            state = await client.hget(state_key, seat)
            order = await client.hget(orders_key, oid)
            buyer = msgspec.json.decode(order).get("b", "") if order else ""
            record = await client.hget(pending_orders_key(buyer), oid) if buyer else None
            lines.append(
                f"{oid} seat {seat} accepted at {sale.accepted_at[oid]:.2f}s"
                f" (fault {sale.fault_at}) state {state!r} order {order!r}"
                f" pending_record {'yes' if record else 'no'}"
            )
    finally:
        await client.aclose()
    return lines
