"""Domain metrics the API exports (prometheus_client; ``ticketbuster_`` prefix, bounded labels).

Import the metric you need from here instead of creating it in your module:
a metric registered twice in one process is an error. Workers have their
own (``api/`` and ``workers/`` never import each other).

With ``PROMETHEUS_MULTIPROC_DIR`` set (several Granian workers), gauges use a
multiprocess mode and ``/metrics`` aggregates the workers' files.
"""

from __future__ import annotations

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
REQUESTS_SHED = Counter(
    "ticketbuster_requests_shed_total",
    "API requests refused with 503 to shed load, by reason (capacity, timeout).",
    ["reason"],
)
