"""Structured JSON logs, one object per line, carrying the request id."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import sys
import time
from typing import Any

import msgspec

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_id", default=None
)

# Attributes every LogRecord has; anything else was passed in ``extra=``.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """``{"ts","level","logger","msg","request_id",...extra}``; tracebacks in ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = getattr(record, "request_id", None) or request_id_var.get()
        if rid:
            out["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(out, enc_hook=str).decode()


_configured = False


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr: the ``ticketbuster`` loggers from ``level``, and the libraries'
    warnings (asyncpg, aiokafka, redis, Litestar) through the root logger (idempotent).

    Written directly by the logging thread: a queue and a writer thread were measured to
    cost more (a GIL hand-off per line) than the write itself."""
    global _configured
    if _configured:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter())
    logging.getLogger().addHandler(handler)
    logger = logging.getLogger("ticketbuster")
    logger.setLevel(level)
    logger.propagate = True  # to the root handler (and pytest's caplog)
    _configured = True


class AccessLog:
    """The access log: one JSON line per request, in the ``JSONFormatter`` schema, written
    to stderr in batches (every ``flush_s``, or at once for a 5xx or a full buffer).

    Building a ``logging.LogRecord`` and formatting it cost more than the hold itself
    once the rest of the path was lean; a line here costs one msgspec encode. Lines of
    the last ``flush_s`` are lost if the process is killed, never reordered.
    """

    def __init__(self, flush_s: float = 0.25, max_lines: int = 512, fd: int = 2) -> None:
        self.flush_s = flush_s
        self.max_lines = max_lines
        self.fd = fd
        self._lines: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None
        self._second = -1
        self._stamp = ""
        self._encode = msgspec.json.Encoder(enc_hook=str).encode

    def _ts(self, now: float) -> str:
        second = int(now)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._stamp}.{int((now - second) * 1000):03d}Z"

    def write(self, fields: dict[str, Any], *, level: str = "info") -> None:
        line = {"ts": self._ts(time.time()), "level": level, "logger": "ticketbuster.access"}
        line["msg"] = "request"
        line.update(fields)
        self._lines.append(self._encode(line) + b"\n")
        if level != "info" or len(self._lines) >= self.max_lines:
            self.flush()
        elif self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._timer = loop.call_later(self.flush_s, self.flush)

    def flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._lines:
            return
        data, self._lines = b"".join(self._lines), []
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
        except OSError:  # stderr closed: the log is best effort, the request is not
            pass
