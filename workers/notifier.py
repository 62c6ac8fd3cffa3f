"""Notifier: order outcomes -> the buyer's notification stream (and ``notifications``).

Consumes ``orders.confirmed`` and ``orders.rejected``; for each, appends an
``OrderStatusChanged`` to the Redis stream ``{user:<sub>}:events`` (fields ``type`` =
``order.status`` and ``data`` = JSON; capped with ``MAXLEN ~``), where the API's
``/api/v1/me/live`` WebSocket (area 7, ``core.live.order_update_from_stream``) tails
it, and publishes the same payload to the ``notifications`` topic for other consumers.
At least once, appended once: a redelivered batch (or a stuck order the reconciler
re-published) brings a status back, and ``lua/notify.lua`` appends each (order, status)
to the stream only the first time, so repeats cannot push out the entries a reconnecting
client still has to read. The ``notifications`` topic gets every copy (its consumers are
at least once too).

Run: ``uv run python -m workers.notifier``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
from aiokafka import ConsumerRecord
from faststream import FastStream
from faststream.kafka import KafkaBroker
from redis.asyncio.cluster import RedisCluster

from core.inventory_link import Route, Script, ScriptLink
from core.orders import (
    TOPIC_CONFIRMED,
    TOPIC_NOTIFICATIONS,
    TOPIC_REJECTED,
    USER_EVENT_TYPE,
    USER_EVENTS_MAXLEN,
    OrderConfirmed,
    OrderRejected,
    encode,
    event_key,
    status_change,
    topic,
    user_events_key,
    user_notified_key,
)
from core.settings import Settings, load_settings
from workers import metrics
from workers.runtime import (
    attach_probes,
    batch_consumer,
    create_broker,
    create_redis,
    ensure_topics,
    run,
)

log = logging.getLogger("ticketbuster.notifier")

GROUP = "notifier"

_CONFIRMED = msgspec.json.Decoder(OrderConfirmed)
_REJECTED = msgspec.json.Decoder(OrderRejected)

NOTIFY: Final = Script(
    (Path(__file__).resolve().parents[1] / "lua" / "notify.lua").read_text(encoding="utf-8")
)
# A marker lives a week: far longer than any redelivery or re-publish takes to arrive.
MARKER_TTL_S = 7 * 24 * 3600


class Notifier:
    def __init__(self, settings: Settings, broker: KafkaBroker, redis: RedisCluster) -> None:
        self.settings = settings
        self.broker = broker
        self.redis = redis
        self.rejected_topic = topic(settings.kafka.topic_prefix, TOPIC_REJECTED)
        # Auto-pipelined per primary, NOSCRIPT handled (a fresh or newly promoted node).
        self.link = ScriptLink.for_client(redis)

    async def _append(self, outcomes: Sequence[OrderConfirmed | OrderRejected]) -> list[Any]:
        """``lua/notify.lua`` for each outcome; each result is an entry id, or None when
        that status was on the stream already. A failure fails the batch, which is then
        retried whole (the markers make the retry harmless)."""
        calls = []
        for outcome in outcomes:
            change = status_change(outcome)
            route = Route(
                [
                    user_events_key(outcome.buyer),
                    user_notified_key(outcome.buyer, change.order_id, change.status),
                ]
            )
            args = (USER_EVENT_TYPE, encode(change), USER_EVENTS_MAXLEN, MARKER_TTL_S)
            calls.append(self.link.run(NOTIFY, route, args))
        return list(await asyncio.gather(*calls))

    async def handle(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        outcomes: list[OrderConfirmed | OrderRejected] = []
        for record in records:
            decoder = _REJECTED if record.topic == self.rejected_topic else _CONFIRMED
            try:
                outcomes.append(decoder.decode(record.value))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                log.error(
                    "skipping undecodable outcome at %s@%d: %s", record.topic, record.offset, exc
                )
        if not outcomes:
            return
        appended = await self._append(outcomes)
        metrics.NOTIFICATION_REPEATS.inc(sum(1 for a in appended if not a))
        futures = []
        for outcome in outcomes:
            change = status_change(outcome)
            futures.append(
                await self.broker.publish(
                    encode(change),
                    topic(self.settings.kafka.topic_prefix, TOPIC_NOTIFICATIONS),
                    key=event_key(outcome.event_id),
                    no_confirm=True,
                )
            )
            metrics.NOTIFICATIONS.labels(status=change.status).inc()
        await asyncio.gather(*futures)


def create_notifier(settings: Settings | None = None) -> FastStream:
    settings = settings or load_settings()
    prefix = settings.kafka.topic_prefix
    broker = create_broker(settings, "notifier")
    state: dict[str, Any] = {}

    async def handle(records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        notifier: Notifier = state["notifier"]
        await notifier.handle(records)

    batch_consumer(
        broker,
        settings,
        [topic(prefix, TOPIC_CONFIRMED), topic(prefix, TOPIC_REJECTED)],
        f"{prefix}{GROUP}",
        handle,
        name=GROUP,
    )

    async def startup() -> None:
        await ensure_topics(settings)
        state["redis"] = await create_redis(settings)
        state["notifier"] = Notifier(settings, broker, state["redis"])

    async def shutdown() -> None:
        if "notifier" in state:
            state["notifier"].link.close()
        if "redis" in state:
            await state["redis"].aclose()

    async def ready() -> bool:
        redis: RedisCluster | None = state.get("redis")
        return redis is not None and bool(await redis.ping()) and await broker.ping(timeout=2)

    app = FastStream(broker, logger=log)
    attach_probes(app, settings.workers.notifier_port, settings.workers.http_host, ready)
    app.on_startup(startup)
    app.after_shutdown(shutdown)
    return app


if __name__ == "__main__":
    run(create_notifier())
