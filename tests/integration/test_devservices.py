"""The one mechanism that starts the local servers: idempotent, self-healing, and it stops what it
started. Runs on its own ports and state folder, beside the servers the other tests use."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from core import devservices
from core.devservices import Layout

pytestmark = pytest.mark.slow


def _free_base_port(count: int) -> int:
    # Below Linux's ephemeral range (32768+), where a client socket could take a port between
    # the check and the bind. Redis uses port + 10000 for its cluster bus.
    for base in range(12000, 22000, 50):
        ports = [*range(base, base + count), *range(base + 10000, base + 10000 + count)]
        if not any(devservices._port_open(p) for p in ports):
            return base
    raise RuntimeError("no free port range")


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    base = _free_base_port(20)
    return Layout(
        state=tmp_path / "state",
        redis_port=base,
        pg_port=base + 10,
        kafka_port=base + 11,
        # Nothing answers here, so devservices must start its own PostgreSQL.
        database_url=f"postgresql://postgres@127.0.0.1:{base + 12}/ticketbuster",
    )


def test_up_is_idempotent_heals_a_crash_and_down_stops_everything(layout: Layout) -> None:
    if os.geteuid() == 0 and not Path("/usr/sbin/runuser").exists():
        pytest.skip("root without runuser cannot start a private PostgreSQL")
    try:
        env = devservices.up(layout)
        assert env["TB_DATABASE_URL"].endswith(f":{layout.pg_port}/ticketbuster")
        assert env["TB_KAFKA_BOOTSTRAP"] == f"127.0.0.1:{layout.kafka_port}"
        assert all(devservices.status(layout).values())

        # A second up changes nothing: same broker process.
        pid = int((layout.state / "kafka" / "tansu.pid").read_text())
        assert devservices.up(layout) == env
        assert int((layout.state / "kafka" / "tansu.pid").read_text()) == pid

        # A crash: the broker and one Redis primary die. up finds and cleans the leftovers.
        os.kill(pid, signal.SIGKILL)
        redis_pid = int((layout.state / "redis" / str(layout.redis_port) / "redis.pid").read_text())
        os.kill(redis_pid, signal.SIGKILL)
        devservices.up(layout)
        assert devservices._cluster_healthy(layout)
        assert devservices._kafka_healthy(layout.kafka_port)
    finally:
        devservices.down(layout)
    assert not devservices._kafka_healthy(layout.kafka_port)
    assert not any(devservices._port_open(p) for p in layout.redis_ports)
    assert not devservices._port_open(layout.pg_port)


def test_a_port_taken_by_a_stranger_is_named(layout: Layout) -> None:
    stranger = socket.socket()
    stranger.bind(("127.0.0.1", layout.kafka_port))
    stranger.listen()
    try:
        with pytest.raises(devservices.ServiceError, match=f"kafka: port {layout.kafka_port}"):
            devservices.kafka_up(layout)
    finally:
        stranger.close()
