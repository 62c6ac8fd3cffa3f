"""Every metric a dashboard or an alert reads is really exported by the code.

Runs ``python -m api`` (Granian, as in the image) and every worker module that
exists, against the dev servers and this session's database and topic prefix,
scrapes their ``/metrics`` and compares with the names in k8s/monitoring/.

Processes run without PROMETHEUS_MULTIPROC_DIR here, so a metric that is
registered shows up (``# TYPE``) even before its first sample; the Prometheus
test (test_dashboard_queries_return_data) checks the queries return data.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest

from core.settings import Settings
from tests.integration.api_servers import free_port, granian_server, settings_env, with_overrides
from tests.k8s import promql
from tests.k8s.conftest import ROOT

pytestmark = pytest.mark.slow

WORKERS = ("persister", "issuer", "notifier", "expirer", "admitter")


def worker_exists(name: str) -> bool:
    return (ROOT / "workers" / f"{name}.py").exists() or (
        ROOT / "workers" / name / "__main__.py"
    ).exists()


class WorkerProcess:
    """``python -m workers.<name>`` with its probe/metrics port on a free loopback port."""

    def __init__(self, name: str, settings: Settings, log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TB_")}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        env.update(settings_env(settings))
        env.update(
            {"TB_WORKERS_HTTP_HOST": "127.0.0.1", f"TB_WORKERS_{name.upper()}_PORT": str(self.port)}
        )
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", f"workers.{name}"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.base_url = f"http://127.0.0.1:{self.port}"

    def wait_alive(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/healthz", timeout=1.0).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError(f"{self.name} not up: {self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


@contextlib.contextmanager
def running_workers(settings: Settings, log_dir: Path) -> Iterator[list[WorkerProcess]]:
    started = [WorkerProcess(n, settings, log_dir) for n in WORKERS if worker_exists(n)]
    try:
        for worker in started:
            worker.wait_alive()
        yield started
    finally:
        for worker in started:
            worker.stop()


def exposition_names(text: str) -> set[str]:
    """Names a scrape offers: every ``# TYPE`` family, and for histograms its series."""
    names: set[str] = set()
    for name, kind in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        if kind == "counter" and not name.endswith("_total"):
            names.add(f"{name}_total")
    names |= set(re.findall(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{| )", text, re.M))
    return names


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(urlunsplit(urlsplit(url)._replace(path="/postgres")))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def app_settings(settings: Settings) -> Iterator[Settings]:
    """The session's servers, but a database and topic prefix of this module's own.

    The workers here (the reconciler above all) act on every event in their database
    and every message on their topics; their own keep them off other tests' state.
    """
    from migrations.runner import migrate

    tag = secrets.token_hex(3)
    base = settings.database.url
    dsn = urlunsplit(urlsplit(base)._replace(path=f"/tb_k8s_{tag}"))
    asyncio.run(_admin(base, f'CREATE DATABASE "tb_k8s_{tag}"'))
    try:
        asyncio.run(migrate(dsn))
        yield with_overrides(
            settings,
            database={"url": dsn},
            kafka={"topic_prefix": f"{settings.kafka.topic_prefix}k8s{tag}."},
        )
    finally:
        asyncio.run(_admin(base, f'DROP DATABASE IF EXISTS "tb_k8s_{tag}" WITH (FORCE)'))


def test_every_dashboard_and_alert_metric_is_exported(
    app_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Absent, not empty: prometheus_client goes multiprocess when the variable exists.
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    used = promql.exported_names_used()
    assert used, "no metric names found in k8s/monitoring"
    scraped: dict[str, set[str]] = {}
    with granian_server(app_settings, tmp_path / "api.log") as api:
        # One counted request makes Litestar's middleware create its metrics.
        assert httpx.get(api.base_url + "/api/v1/events", timeout=10).status_code == 200
        httpx.get(api.base_url + "/api/v1/no-such-route", timeout=10)
        response = httpx.get(api.base_url + "/metrics", timeout=10)
        assert response.status_code == 200
        scraped["api"] = exposition_names(response.text)
    with running_workers(app_settings, tmp_path) as workers:
        for worker in workers:
            response = httpx.get(worker.base_url + "/metrics", timeout=10)
            assert response.status_code == 200, worker.name
            scraped[worker.name] = exposition_names(response.text)

    exported = set().union(*scraped.values())
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    absent_workers = [n for n in WORKERS if n not in scraped]
    assert not missing, (
        f"named in k8s/monitoring but exported by none of {sorted(scraped)} "
        f"(worker modules not in the repo yet: {absent_workers}):\n"
        + "\n".join(f"  {name}: used in {where}" for name, where in sorted(missing.items()))
    )
    # The API serves Litestar's metrics under the names the dashboards use.
    assert "litestar_requests_total" in scraped["api"]
    assert "litestar_request_duration_seconds_bucket" in scraped["api"]


# -- stretch: a real Prometheus scrapes them during a short sale ---------------------------

# Panels that only have data when something fails (no 5xx/429 in a healthy run);
# for them the series they read must exist, not the filtered result.
ONLY_ON_FAILURE = re.compile(r'status_code=~"5\.\.(\|429)?"')


class PrometheusServer:
    """Debian's ``prometheus`` on a free loopback port, scraping the given targets every second."""

    def __init__(
        self, targets: dict[str, str], workdir: Path, rules: list[dict[str, Any]] | None = None
    ) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            pytest.fail("prometheus not found: run .ci/install-tools.sh")
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "1s",
                "evaluation_interval": "1s",
            },
            "scrape_configs": [
                {"job_name": f"ticketbuster-{name}", "static_configs": [{"targets": [target]}]}
                for name, target in targets.items()
            ],
        }
        if rules:
            # Every group evaluated each second, so a short test sees the rules' results.
            groups = [{**group, "interval": "1s"} for group in rules]
            (workdir / "rules.yml").write_text(json.dumps({"groups": groups}))
            config["rule_files"] = [str(workdir / "rules.yml")]
        (workdir / "prometheus.yml").write_text(json.dumps(config))
        self.log_path = workdir / "prometheus.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base_url + "/-/ready", timeout=1).status_code == 200:
                    return
            time.sleep(0.2)
        raise TimeoutError("prometheus not ready")

    def query(self, expr: str) -> list[dict[str, object]]:
        response = httpx.get(self.base_url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body.get("status") == "success", (expr, body)
        result: list[dict[str, object]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self._log.close()


async def seed_small_event(dsn: str, redis_nodes: str) -> tuple[int, list[str]]:
    """One 40-seat event in the session database and Redis, with a fresh large id."""
    import asyncpg

    from core.inventory import Inventory
    from migrations.seed import read_csv, seed
    from tests.integration.catalog_seed import cluster_client, restart_event_ids

    await restart_event_ids(dsn)
    template = read_csv()[0]
    event = dataclasses.replace(template, slug=f"k8s-metrics-{secrets.token_hex(4)}", capacity=40)
    client = cluster_client(redis_nodes)
    await client.initialize()
    try:
        report = await seed(dsn, Inventory(client), [event])
    finally:
        await client.aclose()
    ((event_id, _, _),) = report.created
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT seat_id FROM catalog.seats WHERE event_id = $1 ORDER BY seat_id", event_id
        )
    finally:
        await conn.close()
    return event_id, [r["seat_id"] for r in rows]


async def drop_small_event(redis_nodes: str, event_id: int) -> None:
    from tests.integration.catalog_seed import cluster_client, drop_inventory

    client = cluster_client(redis_nodes)
    await client.initialize()
    try:
        await drop_inventory(client, [event_id])
    finally:
        await client.aclose()


def buy_flow(base_url: str, event_id: int, seats: list[str]) -> list[str]:
    """A tiny on-sale: holds (won and lost), an order, a check-in, a live seat map.

    Returns what did not work, to explain empty panels; the assertions are on the data.
    """
    problems: list[str] = []
    http = httpx.Client(base_url=base_url, timeout=10)

    def token(sub: str, roles: list[str]) -> str:
        response = http.post("/api/v1/auth/dev-token", json={"sub": sub, "roles": roles})
        response.raise_for_status()
        return str(response.json()["access_token"])

    def step(name: str, response: httpx.Response, *ok: int) -> httpx.Response:
        if response.status_code not in ok:
            problems.append(f"{name}: {response.status_code} {response.text[:200]}")
        return response

    alice = {"Authorization": f"Bearer {token('k8s-alice', ['buyer'])}"}
    bob = {"Authorization": f"Bearer {token('k8s-bob', ['buyer'])}"}
    scanner = {"Authorization": f"Bearer {token('k8s-gate', ['scanner'])}"}
    step("seat map", http.get(f"/api/v1/events/{event_id}/seats"), 200)
    hold = step(
        "hold",
        http.post(f"/api/v1/events/{event_id}/holds", json={"seats": seats[:2]}, headers=alice),
        200,
        201,
    )
    step(
        "conflicting hold",
        http.post(f"/api/v1/events/{event_id}/holds", json={"seats": seats[:1]}, headers=bob),
        409,
    )
    if hold.status_code in (200, 201):
        order = step(
            "order",
            http.post(
                "/api/v1/orders",
                json={"hold_id": hold.json()["hold_id"]},
                headers={**alice, "Idempotency-Key": secrets.token_hex(8)},
            ),
            202,
        )
        if order.status_code == 202:
            order_id = order.json()["order_id"]
            deadline = time.monotonic() + 30
            status = "pending"
            while status == "pending" and time.monotonic() < deadline:
                time.sleep(0.3)
                status = (
                    http.get(f"/api/v1/orders/{order_id}", headers=alice)
                    .json()
                    .get("status", "pending")
                )
            if status != "confirmed":
                problems.append(f"order {order_id} ended {status}")
    step(
        "check-in",
        http.post(
            "/api/v1/checkins",
            json={"token": "not-a-ticket", "event_id": event_id, "gate": "main"},
            headers=scanner,
        ),
        422,
    )
    http.close()
    return problems


def test_dashboard_queries_return_data(app_settings: Settings, tmp_path: Path) -> None:
    from websockets.sync.client import connect

    from core.live import SUBPROTOCOL_JSON

    # The reconciler exports the seat and oversold gauges each pass: make passes frequent.
    app_settings = with_overrides(
        app_settings, workers={"reconcile_interval_s": 1.0, "sweep_interval_s": 1.0}
    )
    event_id, seats = asyncio.run(
        seed_small_event(app_settings.database.url, app_settings.redis.cluster_nodes)
    )
    multiproc = tmp_path / "prometheus-api"
    multiproc.mkdir()
    with contextlib.ExitStack() as stack:
        stack.callback(
            lambda: asyncio.run(drop_small_event(app_settings.redis.cluster_nodes, event_id))
        )
        api = stack.enter_context(
            granian_server(
                app_settings, tmp_path / "api.log", {"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
            )
        )
        workers = stack.enter_context(running_workers(app_settings, tmp_path))
        targets = {"api": f"127.0.0.1:{api.port}"}
        targets |= {w.name: f"127.0.0.1:{w.port}" for w in workers}
        prometheus = PrometheusServer(targets, tmp_path, promql.rule_groups())
        stack.callback(prometheus.stop)
        prometheus.wait_ready()

        ws_url = api.base_url.replace("http", "ws") + f"/api/v1/events/{event_id}/live"
        live = stack.enter_context(connect(ws_url, subprotocols=[SUBPROTOCOL_JSON]))
        with contextlib.suppress(TimeoutError):
            live.recv(timeout=5)
        problems = buy_flow(api.base_url, event_id, seats)
        time.sleep(8)  # several scrapes after the sale, while the socket is still open

        empty = {}
        for where, expr in promql.dashboard_exprs().items():
            query = expr.replace("$__range", "10m").replace("$event", ".*")
            if where.endswith("annotation TicketBuster alerts"):
                continue  # ALERTS has series only while an alert fires
            if ONLY_ON_FAILURE.search(query):
                query = ONLY_ON_FAILURE.sub("", query).replace(", }", "}")
            if not prometheus.query(query):
                empty[where] = query
        for record in sorted(promql.recorded_names()):
            if "errors" not in record and not prometheus.query(record):
                empty[f"recording rule {record}"] = record
        # A healthy sale trips no alert (TicketBusterOversold has no `for`: it would).
        firing = prometheus.query('ALERTS{alertstate="firing"}')
    assert not firing, firing
    assert not empty, (
        "dashboard queries with no data after a short sale:\n"
        + "\n".join(f"  {w}: {q}" for w, q in sorted(empty.items()))
        + ("\nflow steps that did not work:\n  " + "\n  ".join(problems) if problems else "")
    )
