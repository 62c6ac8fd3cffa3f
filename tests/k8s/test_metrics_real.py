"""Every metric a dashboard or an alert reads is really exported by the code.

Runs ``python -m api`` (Granian, as in the image) and every worker module that
exists, against the dev servers and this session's database and topic prefix,
scrapes their ``/metrics`` and compares with the names in k8s/monitoring/.

Processes run without PROMETHEUS_MULTIPROC_DIR here, so a metric that is
registered shows up (``# TYPE``) even before its first sample; the Prometheus
test (test_dashboard_queries_return_data) checks the queries return data.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.settings import Settings
from tests.integration.api_servers import free_port, granian_server, settings_env, with_overrides
from tests.k8s import promql
from tests.k8s.conftest import ROOT

pytestmark = pytest.mark.slow

WORKERS = ("persister", "issuer", "notifier", "expirer")


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


@pytest.fixture(scope="module")
def app_settings(settings: Settings, pg_dsn: str) -> Settings:
    return with_overrides(settings, database={"url": pg_dsn})


def test_every_dashboard_and_alert_metric_is_exported(
    app_settings: Settings, tmp_path: Path
) -> None:
    used = promql.exported_names_used()
    assert used, "no metric names found in k8s/monitoring"
    scraped: dict[str, set[str]] = {}
    with granian_server(
        app_settings, tmp_path / "api.log", {"PROMETHEUS_MULTIPROC_DIR": ""}
    ) as api:
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
