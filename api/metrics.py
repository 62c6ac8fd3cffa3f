"""Metrics the API exports (prometheus_client): HTTP requests under the ``litestar_`` names
of Litestar's own Prometheus middleware (which the edge replaces, with pre-bound children),
and domain metrics (``ticketbuster_`` prefix, bounded labels).

Import the metric you need from here instead of creating it in your module:
a metric registered twice in one process is an error. Workers have their
own (``api/`` and ``workers/`` never import each other).

With ``PROMETHEUS_MULTIPROC_DIR`` set (several Granian workers), gauges use a
multiprocess mode and ``/metrics`` aggregates the workers' files.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

HOLDS = Counter(
    "ticketbuster_holds_total",
    "Hold attempts by result (ok, unavailable, limit, invalid, error).",
    ["result"],
)
HOLD_DURATION = Histogram(
    "ticketbuster_hold_duration_seconds",
    "Time to place a hold (one Redis round trip plus the API).",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)
ORDERS = Counter(
    "ticketbuster_orders_total",
    "Orders by status (placed, publish_failed, ...).",
    ["status"],
)
SEATS = Gauge(
    "ticketbuster_seats",
    "Seats per event and status.",
    ["event", "status"],
    multiprocess_mode="mostrecent",
)
WS_CONNECTIONS = Gauge(
    "ticketbuster_ws_connections",
    "Open WebSocket connections by channel.",
    ["channel"],
    multiprocess_mode="livesum",
)
WS_FRAMES = Counter(
    "ticketbuster_ws_frames_total",
    "WebSocket frames sent by channel.",
    ["channel"],
)
CHECKINS = Counter(
    "ticketbuster_checkins_total",
    "Check-ins by result (ok, already_used, invalid, ...).",
    ["result"],
)
GATE_SCANS = Counter(
    "ticketbuster_gate_scans_total",
    "Scans at the gates by gate name and result (admitted, already_used, wrong_event, ...).",
    ["gate", "result"],
)
DIRECT_ROUTE = Counter(
    "ticketbuster_direct_route_total",
    "Requests for a direct route (api/direct.py): served there, or handed on to the "
    "framework (no token, wrong role, odd id, a body it does not decode strictly).",
    ["route", "outcome"],
)
REQUESTS_SHED = Counter(
    "ticketbuster_requests_shed_total",
    "API requests refused with 503 to shed load, by reason (capacity, timeout).",
    ["reason"],
)
RATE_LIMIT_LOCAL = Counter(
    "ticketbuster_ratelimit_local_decisions_total",
    "Rate-limit decisions a replica made alone because Redis could not be reached.",
)

# HTTP requests by route template (never the raw path: ids would each become a series).
_HTTP_LABELS = ["method", "path", "status_code", "app_name"]
HTTP_REQUESTS = Counter("litestar_requests_total", "Total requests.", _HTTP_LABELS)
HTTP_ERRORS = Counter("litestar_requests_error_total", "Requests answered 5xx.", _HTTP_LABELS)
HTTP_DURATION = Histogram(
    "litestar_request_duration_seconds", "Time to the end of the response.", _HTTP_LABELS
)
HTTP_IN_PROGRESS = Gauge(
    "litestar_requests_in_progress",
    "Requests in progress (path and status are not known until routed: '*').",
    _HTTP_LABELS,
    multiprocess_mode="livesum",
)


# -- the hot path's tally ----------------------------------------------------------------


class Tally:
    """Hot-path metric updates added up in plain numbers and written to the metrics in one go.

    With several Granian workers (multiprocess mode) each ``inc``/``observe`` of a
    prometheus_client value takes a lock, checks the process id and writes a memory-mapped
    file; a hold makes seven of them, about 4 % of a worker's CPU at load. The edge's
    request path counts here instead (a Python addition), and ``flush`` adds the sums to the
    real children: when the worker has no request in flight (so a read of ``/metrics``
    after a quiet moment sees every request, as before), after ``FLUSH_EVERY`` updates or
    ``FLUSH_AFTER_S`` under load, and before ``/metrics`` answers.
    """

    FLUSH_EVERY = 2_000
    FLUSH_AFTER_S = 1.0

    def __init__(self) -> None:
        self.dirty: list[TallyCounter | TallyHistogram] = []
        self.updates = 0
        self.flushed_at = time.monotonic()

    def counter(self, child: Any) -> TallyCounter:
        """A stand-in for a Counter or Gauge child (``inc``/``dec``) that tallies here."""
        return TallyCounter(self, child)

    def histogram(self, child: Any) -> TallyHistogram:
        """A stand-in for a Histogram child (``observe``) that tallies here."""
        return TallyHistogram(self, child)

    def due(self, idle: bool) -> bool:
        if not self.dirty:
            return False
        return (
            idle
            or self.updates >= self.FLUSH_EVERY
            or (time.monotonic() - self.flushed_at >= self.FLUSH_AFTER_S)
        )

    def flush(self) -> None:
        dirty, self.dirty = self.dirty, []
        self.updates = 0
        self.flushed_at = time.monotonic()
        for item in dirty:
            item.write()


class TallyCounter:
    __slots__ = ("child", "n", "tally")

    def __init__(self, tally: Tally, child: Any) -> None:
        self.tally, self.child, self.n = tally, child, 0.0

    def inc(self, amount: float = 1.0) -> None:
        if not self.n:
            self.tally.dirty.append(self)
        self.n += amount
        self.tally.updates += 1

    def dec(self, amount: float = 1.0) -> None:
        self.inc(-amount)

    def write(self) -> None:
        n, self.n = self.n, 0.0
        if n > 0:
            self.child.inc(n)
        elif n < 0:
            self.child.dec(-n)


class TallyHistogram:
    __slots__ = ("bounds", "child", "counts", "dirty", "sum", "tally")

    def __init__(self, tally: Tally, child: Any) -> None:
        self.tally, self.child = tally, child
        # prometheus_client's own bucket bounds (the last is +Inf) and, per bucket, how many
        # observations are not written yet: observe() adds 1 to the first bucket whose bound
        # is >= the value, as prometheus_client's Histogram.observe does.
        self.bounds: list[float] = list(child._upper_bounds)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.dirty = False

    def observe(self, amount: float) -> None:
        if not self.dirty:
            self.dirty = True
            self.tally.dirty.append(self)
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount
        self.tally.updates += 1

    def write(self) -> None:
        self.dirty = False
        self.child._sum.inc(self.sum)
        self.sum = 0.0
        for i, n in enumerate(self.counts):
            if n:
                self.child._buckets[i].inc(n)
                self.counts[i] = 0


# One per process: the API's request path (edge, direct routes, holds, orders) counts here.
TALLY = Tally()
