"""Shared plumbing of the worker processes: clients, the probe/metrics port, the entry point.

Every worker is a FastStream app (``create_*`` factory) plus a tiny HTTP server on its
own port serving ``/healthz`` (the process is alive), ``/readyz`` (its dependencies
answer) and ``/metrics`` (Prometheus; multiprocess-safe when
``PROMETHEUS_MULTIPROC_DIR`` is set).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from faststream import AckPolicy, FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.asyncio.cluster import ClusterNode, RedisCluster

from core.settings import Settings
from core.tickets import SigningKey, generate_private_key_pem, signing_key

log = logging.getLogger("ticketbuster.workers")

ReadyCheck = Callable[[], Awaitable[bool]]


def create_broker(settings: Settings, client_id: str) -> KafkaBroker:
    """A Kafka broker whose producer waits for all in-sync replicas (``acks=all``).

    The idempotent producer is a setting: on against real Kafka, off against the dev
    broker (Tansu answers InitProducerId with an error). Consumers are idempotent anyway.
    """
    return KafkaBroker(
        settings.kafka.bootstrap,
        client_id=client_id,
        acks="all",
        enable_idempotence=settings.kafka.idempotent_producer,
        logger=logging.getLogger(f"ticketbuster.{client_id}"),
    )


async def create_pg_pool(settings: Settings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        settings.database.url,
        min_size=1,
        max_size=max(2, settings.database.max_pool),
        command_timeout=30,
    )
    assert pool is not None
    return pool


async def create_redis(settings: Settings) -> RedisCluster:
    nodes = [ClusterNode(host, port) for host, port in settings.redis.startup_nodes()]
    client = RedisCluster(
        startup_nodes=nodes,
        decode_responses=False,
        max_connections=settings.redis.max_connections,
        socket_timeout=settings.redis.socket_timeout_s,
    )
    await client.initialize()
    return client


def load_signing_key(settings: Settings) -> tuple[SigningKey, list[bytes]]:
    """The ticket signing key and every PEM to publish in the JWKS.

    Dev/test: a key is generated into the (git-ignored) path on first use. Prod: the
    path is a mounted Secret and must exist.
    """
    path = Path(settings.tickets.signing_key_path)
    if not path.exists():
        if settings.env == "prod":
            raise RuntimeError(
                f"TB_TICKETS_SIGNING_KEY_PATH: no ticket signing key at {path} (mount the Secret)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        pem = generate_private_key_pem()
        # Two processes may race here: write to a temp file and link, first one wins.
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(pem)
        tmp.chmod(0o600)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
        tmp.unlink()
    pem = path.read_bytes()
    previous = [
        Path(p.strip()).read_bytes() for p in settings.tickets.previous_keys.split(",") if p.strip()
    ]
    return signing_key(pem), [pem, *previous]


def metrics_payload() -> bytes:
    """Prometheus exposition; aggregates all processes in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    from workers.metrics import REGISTRY

    return generate_latest(REGISTRY)


class ProbeServer:
    """``/healthz``, ``/readyz`` and ``/metrics`` over HTTP/1.1, one request per connection."""

    def __init__(self, host: str, port: int, ready: ReadyCheck) -> None:
        self.host = host
        self.port = port
        self._ready = ready
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets
        if sockets:
            self.port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            parts = line.decode("latin-1").split()
            path = parts[1].split("?")[0] if len(parts) > 1 else "/"
            status, ctype, body = await self._route(path)
            head = (
                f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + body)
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _route(self, path: str) -> tuple[str, str, bytes]:
        if path == "/healthz":
            return "200 OK", "application/json", b'{"status":"ok"}'
        if path == "/readyz":
            try:
                ok = await asyncio.wait_for(self._ready(), 3)
            except Exception:
                ok = False
            if ok:
                return "200 OK", "application/json", b'{"status":"ready"}'
            return "503 Service Unavailable", "application/json", b'{"status":"not ready"}'
        if path == "/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, metrics_payload()
        return "404 Not Found", "text/plain", b"not found"


async def pg_ready(pool: asyncpg.Pool | None) -> bool:
    if pool is None:
        return False
    async with pool.acquire(timeout=2) as conn:
        return bool(await conn.fetchval("SELECT 1"))


def attach_probes(app: FastStream, port: int, host: str, ready: ReadyCheck) -> ProbeServer:
    """Serve the probes for the app's whole life (started first, stopped last)."""
    probes = ProbeServer(host, port, ready)
    app.context.set_global("probes", probes)  # tests read the bound port from here
    app.on_startup(probes.start)
    app.after_shutdown(probes.stop)
    return probes


def configure_logging() -> None:
    """One JSON object per line on stderr."""

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            doc: dict[str, Any] = {
                "ts": round(record.created, 3),
                "level": record.levelname.lower(),
                "logger": record.name,
                "msg": record.getMessage(),
            }
            if record.exc_info:
                doc["exc"] = self.formatException(record.exc_info)
            return msgspec.json.encode(doc).decode()

    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("TB_LOG_LEVEL", "INFO").upper())


def run(app: FastStream) -> None:
    """Entry point: uvloop, JSON logs, graceful stop on SIGTERM/SIGINT (FastStream's), and
    the offset guard of every consumer (``guard_offsets``)."""
    configure_logging()
    guard: list[asyncio.Task[None]] = []

    async def start_guard() -> None:
        if app.broker is not None:
            guard.append(asyncio.create_task(guard_offsets(app.broker)))

    async def stop_guard() -> None:
        for task in guard:
            task.cancel()

    app.after_startup(start_guard)
    app.on_shutdown(stop_guard)
    try:
        import uvloop

        uvloop.run(app.run())
    except ImportError:  # pragma: no cover
        asyncio.run(app.run())


OFFSET_GUARD_INTERVAL_S = 2.0


async def guard_offsets(broker: Any, interval_s: float = OFFSET_GUARD_INTERVAL_S) -> None:
    """Every ``interval_s``, send each consumer that stays past its partition's end back
    to the partition's start (``OffsetGuard``)."""
    from workers import metrics

    guard = OffsetGuard(metrics.OFFSET_RESETS)
    while True:
        await asyncio.sleep(interval_s)
        for sub in list(broker.subscribers):
            consumer = getattr(sub, "consumer", None)
            if not isinstance(consumer, AIOKafkaConsumer):
                continue
            try:
                await guard.check(consumer)
            except Exception as exc:  # the broker is away: the next pass looks again
                log.debug("offset guard: %s", exc)


class OffsetGuard:
    """Finds consumers whose position is past the end of their partition, and rewinds them.

    A position beyond the end means the log under the consumer was truncated or replaced:
    a broker that lost its data (the memory-only dev broker on a restart, a Kafka cluster
    restored or rebuilt), an unclean leader election. Kafka answers such a fetch with
    OFFSET_OUT_OF_RANGE and the client resets; a broker that answers it with an empty
    fetch instead (the dev broker does) leaves the consumer waiting, skipping every new
    record until the log grows past the old position: accepted orders, and the
    reconciler's re-publishes of them, would never be read. Reading from the start is
    safe because every handler is idempotent (at-least-once delivery).

    The end is the high watermark of the consumer's own last fetch (the dev broker's
    ListOffsets answers the base offset of the last batch + 1, short of the true end), and
    a partition is rewound only when a second check finds it at the same position, still
    past the end: a consumer that moves is not stuck.
    """

    def __init__(self, resets: Any) -> None:
        self.resets = resets
        self._past: dict[tuple[int, TopicPartition], int] = {}  # position seen past the end

    async def check(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        rewound = []
        seen: dict[tuple[int, TopicPartition], int] = {}
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            position = await consumer.position(tp)
            if position <= end:
                continue
            key = (id(consumer), tp)
            if self._past.get(key) != position:
                seen[key] = position  # look again at the next check
                continue
            log.warning(
                "%s/%d: position %d is past the end %d (the log was truncated or replaced);"
                " reading it again from the start",
                tp.topic,
                tp.partition,
                position,
                end,
            )
            await consumer.seek_to_beginning(tp)
            group = getattr(consumer, "_group_id", None) or ""
            self.resets.labels(topic=tp.topic, group=group).inc()
            rewound.append(tp)
        self._past = {k: v for k, v in self._past.items() if k[0] != id(consumer)} | seen
        return rewound


ALL_TOPICS = (
    "orders.placed",
    "orders.confirmed",
    "orders.rejected",
    "orders.dlq",
    "tickets.issued",
    "notifications",
    "tickets.reissue",
)


async def ensure_topics(settings: Settings) -> None:
    """Create the saga's topics in dev/test (in prod, Strimzi KafkaTopic resources own them)."""
    if settings.env == "prod":
        return
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka.bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(f"{settings.kafka.topic_prefix}{name}", settings.kafka.partitions, 1)
            for name in ALL_TOPICS
            if f"{settings.kafka.topic_prefix}{name}" not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except KafkaError as exc:  # a concurrent starter created them first
                log.info("create_topics: %s", exc)
    finally:
        await admin.close()


RecordsHandler = Callable[[Sequence[ConsumerRecord[Any, Any]]], Awaitable[None]]


def batch_consumer(
    broker: KafkaBroker,
    settings: Settings,
    topics: Sequence[str],
    group: str,
    handle: RecordsHandler,
    *,
    name: str,
) -> None:
    """Subscribe ``handle`` to batches of ``topics`` with at-least-once delivery.

    Offsets are committed only after ``handle`` returns; if it raises, the batch is
    rewound and retried after a pause (the handler must be idempotent).
    """
    failures = 0

    @broker.subscriber(
        *topics,
        group_id=group,
        batch=True,
        max_records=settings.workers.batch_max_records,
        batch_timeout_ms=settings.workers.batch_timeout_ms,
        ack_policy=AckPolicy.MANUAL,
        auto_offset_reset="earliest",
    )
    async def consume(msg: KafkaMessage) -> None:
        nonlocal failures
        records = msg.raw_message
        if not isinstance(records, tuple):
            records = (records,)
        try:
            await handle(records)
        except Exception:
            failures += 1
            log.exception("%s: batch of %d failed; retrying", name, len(records))
            rewind(msg.consumer, records)
            await asyncio.sleep(min(5.0, 0.5 * failures))
            return
        failures = 0
        await msg.ack()
        await observe_lag(msg.consumer, group)


def rewind(consumer: AIOKafkaConsumer, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
    """Seek every partition of the batch back to its first record (nothing is committed).

    A partition a rebalance has taken away meanwhile is skipped (seeking it would raise
    before the others are rewound): its new owner reads it from the last commit.
    """
    earliest: dict[TopicPartition, int] = {}
    for r in records:
        tp = TopicPartition(r.topic, r.partition)
        earliest[tp] = min(earliest.get(tp, r.offset), r.offset)
    assigned = consumer.assignment()
    for tp, offset in earliest.items():
        if tp in assigned:
            consumer.seek(tp, offset)


async def observe_lag(consumer: AIOKafkaConsumer, group: str) -> None:
    """Set ticketbuster_consumer_lag{topic,group}: high watermark minus position, summed."""
    from workers import metrics

    # Every subscribed topic starts at 0: after a rebalance takes a topic's partitions away,
    # this pod must stop reporting the lag it had there (the group's sum would double count).
    per_topic: dict[str, int] = dict.fromkeys(consumer.subscription(), 0)
    for tp in consumer.assignment():
        high = consumer.highwater(tp)
        if high is None:
            continue
        position = await consumer.position(tp)
        per_topic[tp.topic] = per_topic.get(tp.topic, 0) + max(0, high - position)
    for name, lag in per_topic.items():
        metrics.CONSUMER_LAG.labels(topic=name, group=group).set(lag)
