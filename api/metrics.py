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
