"""Structured JSON logs, one object per line, carrying the request id."""

from __future__ import annotations

import atexit
import contextvars
import logging
import logging.handlers
import queue
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


class _PreformattedQueueHandler(logging.handlers.QueueHandler):
    """Formats the JSON line in the caller (it needs the request id's context) and leaves
    the write to the listener thread, so a slow log pipe never blocks the event loop."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        line = self.format(record)
        prepared = logging.makeLogRecord({"msg": line, "levelno": record.levelno})
        prepared.levelname = record.levelname
        prepared.name = record.name
        return prepared


_listener: logging.handlers.QueueListener | None = None


def configure_logging(level: str = "INFO") -> None:
    """JSON lines on stderr: the ``ticketbuster`` loggers from ``level``, and the libraries'
    warnings (asyncpg, aiokafka, redis, Litestar) through the root logger (idempotent).

    Records are formatted where they are logged and written by a background thread."""
    global _listener
    if _listener is not None:
        return
    writer = logging.StreamHandler(sys.stderr)
    writer.setFormatter(logging.Formatter("%(message)s"))
    log_queue: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    handler = _PreformattedQueueHandler(log_queue)
    handler.setFormatter(JSONFormatter())
    _listener = logging.handlers.QueueListener(log_queue, writer)
    _listener.start()
    atexit.register(_listener.stop)  # flush what is queued when the process ends
    logging.getLogger().addHandler(handler)
    logger = logging.getLogger("ticketbuster")
    logger.setLevel(level)
    logger.propagate = True  # to the root handler (and pytest's caplog)
