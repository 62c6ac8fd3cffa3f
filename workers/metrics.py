"""Prometheus metrics of the workers (names per docs: ticketbuster_*, bounded labels only).

Worker processes set ``PROMETHEUS_MULTIPROC_DIR`` when more than one process shares a
port; gauges therefore declare how they aggregate across processes.
"""

from __future__ import annotations

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

# The workers' own registry (served on their probe port), so that a process that also
# builds the API (tests) does not register the shared names twice.
REGISTRY = CollectorRegistry(auto_describe=True)
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

TICKET_EMAILS = Counter(
    "ticketbuster_ticket_emails_total",
    "Ticket e-mails by kind (confirmation, resend) and result (sent, no_address, duplicate).",
    ["kind", "result"],
    registry=REGISTRY,
)
ORDERS = Counter("ticketbuster_orders_total", "Orders by status.", ["status"], registry=REGISTRY)
PURCHASE_DURATION = Histogram(
    "ticketbuster_purchase_duration_seconds",
    "From OrderPlaced (API) to the persister's decision.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
    registry=REGISTRY,
)
OFFSET_RESETS = Counter(
    "ticketbuster_consumer_offset_resets_total",
    "Partitions a consumer found itself past the end of (the log was truncated or"
    " replaced) and read again from the start.",
    ["topic", "group"],
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "ticketbuster_consumer_lag",
    "Messages behind the end of the topic, per consumer group.",
    ["topic", "group"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "ticketbuster_persister_batch_size",
    "Orders per persisted batch.",
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000),
    registry=REGISTRY,
)
BATCH_DURATION = Histogram(
    "ticketbuster_persister_batch_duration_seconds",
    "Time to persist one batch (transaction and published outcomes).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    registry=REGISTRY,
)
REDIS_BACKLOG = Gauge(
    "ticketbuster_persister_redis_backlog",
    "Decided orders the persister has still to tell Redis (mark_sold / reject).",
    multiprocess_mode="sum",
    registry=REGISTRY,
)
REDIS_DROPPED = Counter(
    "ticketbuster_persister_redis_dropped_total",
    "Decided orders the persister stopped telling Redis (backlog full): the reconciler's.",
    registry=REGISTRY,
)
TICKETS = Counter(
    "ticketbuster_persister_tickets_total", "Tickets written by the persister.", registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "ticketbuster_dead_letters_total",
    "Messages sent to the dead-letter topic.",
    ["worker"],
    registry=REGISTRY,
)
TICKETS_ISSUED = Counter(
    "ticketbuster_tickets_issued_total", "Tickets signed by the issuer.", registry=REGISTRY
)
NOTIFICATIONS = Counter(
    "ticketbuster_notifications_total",
    "Order status changes delivered to buyers.",
    ["status"],
    registry=REGISTRY,
)
NOTIFICATION_REPEATS = Counter(
    "ticketbuster_notification_repeats_total",
    "Order status changes that came again (a redelivery, a re-publish) and were not "
    "appended to the buyer's stream a second time.",
    registry=REGISTRY,
)
RECONCILER_MISMATCHES = Gauge(
    "ticketbuster_reconciler_mismatches",
    "Seats on which Redis and PostgreSQL disagree at the last reconcile pass.",
    ["kind"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
OVERSOLD_SEATS = Gauge(
    "ticketbuster_oversold_seats",
    "Seats sold more than once (must stay 0).",
    multiprocess_mode="max",
    registry=REGISTRY,
)
HOLDS_SWEPT = Counter(
    "ticketbuster_holds_swept_total", "Expired holds released by the sweeper.", registry=REGISTRY
)
STUCK_ORDERS = Counter(
    "ticketbuster_reconciler_actions_total",
    "Stuck orders the reconciler acted on.",
    ["action"],
    registry=REGISTRY,
)
SEATS = Gauge(
    "ticketbuster_seats",
    "Seats per event and status, from the reconciler's last pass.",
    ["event", "status"],
    multiprocess_mode="mostrecent",
    registry=REGISTRY,
)

# The waiting rooms (workers/admitter.py), per queued event (a handful at once).
QUEUE_WAITING = Gauge(
    "ticketbuster_queue_waiting",
    "Fans waiting in an event's queue.",
    ["event"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
QUEUE_ADMITTED = Gauge(
    "ticketbuster_queue_admitted",
    "Fans admitted from an event's queue so far.",
    ["event"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
QUEUE_RATE = Gauge(
    "ticketbuster_queue_rate_per_minute",
    "An event's admission rate setting (fans per minute).",
    ["event"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
QUEUE_SOLD_OUT = Gauge(
    "ticketbuster_queue_sold_out",
    "1 while an event's queue is closed because no seat is left.",
    ["event"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
QUEUE_LOG_ENTRIES = Counter(
    "ticketbuster_queue_log_entries_total",
    "Fairness-log entries appended to PostgreSQL.",
    registry=REGISTRY,
)
REFUNDS = Counter(
    "ticketbuster_refunds_total",
    "Refund attempts by outcome (refunded, failed) and kind.",
    ["outcome", "kind"],
    registry=REGISTRY,
)
REFUND_NOTICES = Counter(
    "ticketbuster_refund_notices_total",
    "Refund states published to the notifications topic, by status.",
    ["status"],
    registry=REGISTRY,
)
PAYMENT_MISMATCHES = Gauge(
    "ticketbuster_payment_mismatches",
    "Payments and orders that disagree at the last pass of the payments worker "
    "(captured_without_order: captured over 30 minutes ago and no order placed).",
    ["kind"],
    multiprocess_mode="max",
    registry=REGISTRY,
)
