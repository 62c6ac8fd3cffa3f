"""Serve the API with Granian (ASGI, uvloop): ``uv run python -m api``.

Honours ``TB_API_HOST``, ``TB_API_PORT`` and ``TB_API_WORKERS`` (default 0: one worker per
core the process may use). With more
than one worker, Prometheus metrics are kept per process in
``PROMETHEUS_MULTIPROC_DIR`` (default ``.tb/prometheus/api-<port>``), wiped
before the start so counters from a previous run do not leak in.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from granian import Granian
from granian.constants import Interfaces, Loops

from api.startup import check_api_settings
from core.settings import SettingsError, load_settings


def _prepare_multiproc_dir(port: int, workers: int) -> None:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory and workers > 1:
        directory = str(Path(".tb") / "prometheus" / f"api-{port}")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    if directory:
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        # Empty it, but keep the directory itself: in Kubernetes it is an emptyDir mount.
        for entry in path.iterdir():
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


# Granian's own lines (startup, workers, errors) as JSON too, like the app's.
GRANIAN_LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"json": {"()": "api.logs.JSONFormatter"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "loggers": {"_granian": {"handlers": ["console"], "level": "INFO", "propagate": False}},
}


def cores() -> int:
    """Cores this process may run on: its CPU affinity, capped by a cgroup CPU quota."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    count = count or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            count = min(count, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return count


def main() -> None:
    try:
        settings = load_settings()
        check_api_settings(settings)
    except SettingsError as exc:
        sys.exit(f"ticketbuster api: {exc}")
    api = settings.api
    workers = api.workers or cores()
    _prepare_multiproc_dir(api.port, workers)
    Granian(
        "api.app:create_app",
        factory=True,
        address=api.host,
        port=api.port,
        workers=workers,
        interface=Interfaces.ASGI,
        loop=Loops.uvloop,
        log_access=False,  # the app writes its own JSON access log with the request id
        log_dictconfig=GRANIAN_LOGGING,
        respawn_failed_workers=True,
        working_dir=Path.cwd(),
    ).serve()


if __name__ == "__main__":
    main()
