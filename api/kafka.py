"""The API's Kafka producer: created in the app lifespan, reached through DI.

``acks=all``; idempotence from ``TB_KAFKA_IDEMPOTENT_PRODUCER`` (on for real
Kafka; the dev broker rejects InitProducerId). If the broker is down when the
API starts, the API still starts (browsing and holds do not need Kafka) and the
producer keeps retrying in the background; until it is up the
``kafka_producer`` dependency answers 503 with ``Retry-After`` and ``/readyz``
names Kafka.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from aiokafka import AIOKafkaProducer

from core.breaker import Breaker
from core.errors import Unavailable
from core.settings import KafkaSettings

log = logging.getLogger("ticketbuster.api.kafka")


class KafkaProducerHandle:
    """Owns one ``AIOKafkaProducer``; ``producer()`` returns it once it is connected."""

    def __init__(self, settings: KafkaSettings, *, retry_interval_s: float = 2.0) -> None:
        self.settings = settings
        self.retry_interval_s = retry_interval_s
        self._producer: AIOKafkaProducer | None = None
        self._started = False
        self._task: asyncio.Task[None] | None = None
        self._last_check: tuple[float, bool] = (0.0, False)
        # Fed by the order path's publishes; while open, producer() answers 503 at once.
        self.breaker = Breaker("kafka")

    def _new_producer(self) -> AIOKafkaProducer:
        timeout_ms = int(self.settings.request_timeout_s * 1000)
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap,
            acks="all",
            enable_idempotence=self.settings.idempotent_producer,
            request_timeout_ms=timeout_ms,
            client_id="ticketbuster-api",
        )

    async def _try_start(self) -> bool:
        producer = self._new_producer()
        try:
            await asyncio.wait_for(producer.start(), timeout=self.settings.request_timeout_s)
        except Exception as exc:
            log.warning("Kafka producer not started: %s: %s", type(exc).__name__, exc)
            with contextlib.suppress(Exception):
                await producer.stop()
            return False
        self._producer = producer
        self._started = True
        log.info("Kafka producer connected to %s", self.settings.bootstrap)
        return True

    async def _retry_forever(self) -> None:
        while True:
            await asyncio.sleep(self.retry_interval_s)
            if await self._try_start():
                return

    async def start(self) -> None:
        """Connect now if possible, else keep trying in the background."""
        if not await self._try_start():
            self._task = asyncio.create_task(self._retry_forever(), name="kafka-producer-start")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        self._producer = None
        self._started = False

    @property
    def started(self) -> bool:
        return self._started

    def producer(self) -> AIOKafkaProducer:
        """The connected producer, or ``Unavailable`` (503, Retry-After)."""
        if self._producer is None or not self._started:
            raise Unavailable(
                "The order pipeline is not reachable; retry shortly.", retry_after_s=2
            )
        self.breaker.check()
        return self._producer

    async def check(self, timeout_s: float = 2.0, cache_s: float = 1.0) -> bool:
        """A metadata round trip to the brokers (cached briefly so probes do not pile up)."""
        now = time.monotonic()
        if now - self._last_check[0] < cache_s:
            return self._last_check[1]
        ok = False
        if self._producer is not None and self._started:
            try:
                await asyncio.wait_for(self._producer.client.fetch_all_metadata(), timeout_s)
                ok = True
            except Exception as exc:
                log.warning("Kafka readiness check failed: %s: %s", type(exc).__name__, exc)
        self._last_check = (now, ok)
        return ok
