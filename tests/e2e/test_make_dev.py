"""`make dev` runs `python -m core.devservices run`: servers, migrations, seed, the API and the
four workers, all healthy; Ctrl-C stops every process it started and leaves alone the servers that
were already up. Run here on free ports against the seeded test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.api_servers import free_port
from tests.integration.catalog_seed import SeededCatalog, seeded_catalog  # noqa: F401

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
WORKERS = ("persister", "issuer", "notifier", "expirer", "admitter")


def _wait_ok(url: str, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"make dev exited early:\n{log.read_text()[-4000:]}")
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == 200:
                return response.json()
            last = f"{response.status_code} {response.text[:200]}"
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.5)
    raise AssertionError(f"{url} not ready in {timeout_s}s ({last}):\n{log.read_text()[-4000:]}")


def test_make_dev_brings_up_a_healthy_system_and_ctrl_c_stops_it(
    seeded_catalog: SeededCatalog,  # noqa: F811
    services: dict[str, str],
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    api_port = free_port()
    worker_ports = {name: free_port() for name in WORKERS}
    env = {k: v for k, v in os.environ.items() if not k.startswith("TB_")}
    env.update(services)
    env.update(
        {
            "TB_ENV": "dev",
            "TB_DATABASE_URL": seeded_catalog.dsn,
            "TB_API_PORT": str(api_port),
            "TB_KAFKA_TOPIC_PREFIX": f"{topic_prefix}dev.",
            **{f"TB_WORKERS_{name.upper()}_PORT": str(port) for name, port in worker_ports.items()},
        }
    )
    log = tmp_path / "make-dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "core.devservices", "run"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        ready = _wait_ok(f"http://127.0.0.1:{api_port}/readyz", proc, log)
        assert ready["checks"] == {"redis": "ok", "postgres": "ok", "kafka": "ok"}
        for name, port in worker_ports.items():
            _wait_ok(f"http://127.0.0.1:{port}/readyz", proc, log)
            metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert "ticketbuster_" in metrics, name
        # The seeded catalog is served: 20 events, each with its live availability.
        events = httpx.get(f"http://127.0.0.1:{api_port}/api/v1/events?limit=100", timeout=10)
        assert len(events.json()["items"]) == 20
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, log.read_text()[-4000:]
    text = log.read_text()
    assert "leaving them running" in text
    # Every process it started is gone; the servers that were up before are still up.
    for port in (api_port, *worker_ports.values()):
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)
    from core import devservices

    assert all(devservices.status().values())
