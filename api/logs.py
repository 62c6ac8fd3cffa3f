"""Structured JSON logs, one object per line, carrying the request id."""

from __future__ import annotations

import contextvars
import logging
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
