"""Waiting-room places pushed over the user channel, coalesced per replica.

A fan on ``/api/v1/me/live`` sends ``{"type": "watch_queue", "event_id": N}``. The first
answer costs one Redis call (the fan's place); after that a fan's place is a number
that does not change: once the sale opened, fans leave only from the head and join only
at the back, so ``number = admitted so far + rank + 1`` is fixed, and the position is
``number - admitted``. Once a second (``interval_s``) this replica reads each watched
queue's state with one call per event - not one per fan - and pushes a ``queue`` frame
to each fan whose position changed. A fan is asked about again only when their number
comes up (to get the admission token), when the pre-queue draw is done (to learn their
number) or when the queue sells out or resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from core.errors import DomainError
from core.live import ErrorFrame, QueueUpdate
from core.queue import PositionView, eta_s

log = logging.getLogger("ticketbuster.api.live.queue")

MAX_WATCHED_QUEUES = 4


class _Watcher:
    __slots__ = ("last", "number", "outbox", "sub")

    def __init__(self, sub: str, outbox: Any, number: int | None, last: QueueUpdate) -> None:
        self.sub = sub
        self.outbox = outbox
        self.number = number  # None: not known yet (pre-queue) or done (admitted)
        self.last = last


def _frame(view: PositionView) -> QueueUpdate:
    return QueueUpdate(
        event_id=view.event_id,
        status=view.status,
        pre_queue=view.pre_queue,
        position=view.position,
        waiting=view.waiting,
        eta_s=view.eta_s,
        admission=view.admission,
        admission_expires_at=view.admission_expires_at,
    )


class QueuePush:
    """The queue watchers of one replica; ``service()`` gives the ``QueueService``."""

    def __init__(self, service: Callable[[], Any], interval_s: float = 1.0) -> None:
        self._service = service
        self.interval_s = interval_s
        self._events: dict[int, dict[int, _Watcher]] = {}  # event -> id(session) -> watcher
        self._task: asyncio.Task[None] | None = None
        self.redis_calls = 0  # for tests and the benchmark: calls made by the ticker

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="live-queue-push")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def watch(self, session: Any, event_id: int) -> None:
        watched = sum(1 for w in self._events.values() if id(session) in w)
        if watched >= MAX_WATCHED_QUEUES:
            session.outbox.put(ErrorFrame(code="too_many_queues", detail="too many queues"))
            return
        try:
            view, number = await self._service().watch_place(session.sub, event_id)
        except DomainError as exc:
            session.outbox.put(ErrorFrame(code=exc.code, detail=exc.detail))
            return
        frame = _frame(view)
        session.outbox.put(frame)
        if view.status != "admitted":
            self._events.setdefault(event_id, {})[id(session)] = _Watcher(
                session.sub, session.outbox, number, frame
            )

    def forget(self, session: Any) -> None:
        for event_id in list(self._events):
            watchers = self._events[event_id]
            watchers.pop(id(session), None)
            if not watchers:
                del self._events[event_id]

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            for event_id in list(self._events):
                try:
                    await self.tick(event_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a Redis hiccup: the next tick tries again
                    log.warning("queue push for event %s failed: %s", event_id, exc)

    async def tick(self, event_id: int) -> None:
        """One coalesced round for one event: one Redis call, plus one per fan whose number
        came up or is not known yet."""
        watchers = self._events.get(event_id)
        if not watchers:
            return
        service = self._service()
        config = await service.config(event_id)
        status = await service.gateway.status(event_id)
        self.redis_calls += 1
        if status is None:
            return
        opened = status.state != "pre"
        for key, w in list(watchers.items()):
            if status.state == "sold_out":
                frame = QueueUpdate(event_id=event_id, status="sold_out", waiting=status.waiting)
            elif w.number is None or w.number - status.admitted <= 0 or w.last.status != "waiting":
                if w.number is None and not opened:
                    continue  # still the pre-queue: nothing new to say
                view, w.number = await service.watch_place(w.sub, event_id)
                self.redis_calls += 1
                frame = _frame(view)
            else:
                position = w.number - status.admitted
                frame = QueueUpdate(
                    event_id=event_id,
                    status="waiting",
                    position=position,
                    waiting=status.waiting,
                    eta_s=eta_s(position, config.rate_per_min),
                )
            if frame != w.last:
                w.outbox.put(frame)
                w.last = frame
            if frame.status == "admitted":
                watchers.pop(key, None)
        if not watchers:
            self._events.pop(event_id, None)
