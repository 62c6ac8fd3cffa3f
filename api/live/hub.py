"""The per-replica fan-out hub behind the live WebSocket channels.

Event channel: one *room* per watched event on this replica, one *tailer* task per
partition of that event. A tailer loops on ``XREAD BLOCK`` on the partition's change
stream, on a Redis client of its own (a blocked read holds a connection for up to
``block_ms``; a separate pool means the inventory's commands never wait behind it).
Changes are coalesced per partition: the first change after a quiet spell goes out at
once, later ones at most every ``coalesce_ms`` (longer, up to five windows, while
half the room is still sending the previous frame). Each coalesced frame is encoded
once and the same bytes are queued to every subscriber.

Every subscriber (connection) has an ``Outbox``: a bounded queue. When it is full the
client is too slow; the outbox closes with 4429 and the connection is dropped, so
memory per client stays bounded whatever the client does.

User channel: the notifier appends each order status change to the user's stream
``{user:<sub>}:events`` (core/orders.py). One poller task per replica reads all the
streams of the users connected here with one pipelined ``XRANGE`` per user every
``user_poll_ms`` (a blocking read per user would cost one connection per user).
Hold warnings: a client asks to watch one of its holds; the hub checks ownership
through the inventory and warns ``hold_warning_s`` before it expires, re-checking the
hold (extended, bought, released) right before it warns.

Design and alternatives: docs/decisions/0701-live-seat-map.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, Literal, cast

from prometheus_client import Counter, Gauge, Histogram
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from api.live.queue_push import QueuePush
from core.clock import now_ms
from core.live import (
    CLOSE_GOING_AWAY,
    CLOSE_SLOW_CONSUMER,
    ZERO_VERSION,
    Deltas,
    ErrorFrame,
    Frame,
    FrameEncoder,
    HoldExpiring,
    HoldGone,
    HoldWatched,
    Resync,
    SeatChange,
    format_version,
    order_update_from_stream,
    parse_version,
    seat_change_from_stream,
    stream_key,
)
from core.orders import user_events_key
from core.settings import LiveSettings

log = logging.getLogger("ticketbuster.api.live")

Channel = Literal["event", "user"]

WS_CLOSED: Final = Counter(
    "ticketbuster_ws_closed",
    "WebSocket connections the server closed, per channel and close code.",
    ["channel", "code"],
)
WS_DELIVERY: Final = Histogram(
    "ticketbuster_ws_delivery_seconds",
    "Seat change committed in Redis (its stream id's time) -> frame sent to one client.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LIVE_TAILERS: Final = Gauge(
    "ticketbuster_live_tailers",
    "Partition change streams this replica tails.",
    multiprocess_mode="livesum",
)

# Event id -> partition count, or None when there is no such event (or not on sale).
PartitionLookup = Callable[[int], Awaitable[int | None]]
# (hold_id, buyer) -> (event_id, expires_at ms) of that buyer's live hold, else None.
HoldLookup = Callable[[str, str], Awaitable[tuple[int, int] | None]]

_LOOKUP_CACHE_S: Final = 30.0
# An unknown event may be loaded any moment (seed, cold start): forget that soon.
_UNKNOWN_CACHE_S: Final = 2.0
_LOOKUP_CACHE_SIZE: Final = 4096
_MAX_WATCHED_HOLDS: Final = 16
_USER_READ_COUNT: Final = 100
_USER_PIPELINE_CHUNK: Final = 256
# Adaptive coalescing: while the previous frame is still being sent, look again after
# this long, for at most this many coalescing windows after the previous frame.
_BUSY_RETRY_S: Final = 0.02
_MAX_WINDOWS: Final = 5
# Opening a room (one XINFO per partition) may take this long before joiners are told
# to retry: a Redis call that hangs must not hold a connection's handshake forever.
_OPEN_TIMEOUT_S: Final = 5.0
# stop() waits at most this long for its tasks; a task still running by then is
# cancelled again every _RECANCEL_S (a cancellation can be lost, see _cancel_all).
_STOP_TIMEOUT_S: Final = 2.0
_RECANCEL_S: Final = 0.1


class UnknownEvent(Exception):
    """No such event (or its inventory is not loaded)."""


class AtCapacity(Exception):
    """This replica serves as many connections or tails as many streams as it may."""


class ClientAtCapacity(AtCapacity):
    """This client address holds as many live sockets on this replica as it may."""


class LiveUnavailable(Exception):
    """Redis could not be reached to look up or open the event; retry shortly."""


class Outbox:
    """A bounded queue of frames for one connection, closed with a code and a reason."""

    __slots__ = ("_items", "_limit", "_ready", "closed")

    def __init__(self, limit: int) -> None:
        self._items: deque[Batch | Frame] = deque()
        self._limit = limit
        self._ready = asyncio.Event()
        self.closed: tuple[int, str] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Batch | Frame) -> bool:
        """Queue ``item``; False if the outbox is closed or just overflowed (and closed)."""
        if self.closed is not None:
            return False
        if len(self._items) >= self._limit:
            self.close(CLOSE_SLOW_CONSUMER, f"too slow: {self._limit} frames queued")
            return False
        self._items.append(item)
        self._ready.set()
        return True

    def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self.discard()  # free the memory now, not when the connection ends
            self._ready.set()

    def discard(self) -> None:
        """Drop what is queued (the connection is over or too slow)."""
        while self._items:
            item = self._items.popleft()
            if isinstance(item, Batch):
                item.unsent -= 1

    async def get(self) -> Batch | Frame | None:
        """The next item, or None once closed (queued items are then dropped)."""
        while True:
            if self.closed is not None:
                return None
            if self._items:
                return self._items.popleft()
            self._ready.clear()
            await self._ready.wait()

    async def wait_closed(self) -> tuple[int, str]:
        while self.closed is None:
            self._ready.clear()
            await self._ready.wait()
        return self.closed


class Batch:
    """Coalesced seat changes of one partition, shared by every subscriber of the event.

    Encoded at most once per wire format, however many clients receive it.
    """

    __slots__ = (
        "_json",
        "_msgpack",
        "changes",
        "event_id",
        "first",
        "last",
        "partition",
        "unsent",
    )

    def committed_ms(self) -> int:
        """Redis time (ms) of the oldest change: stream ids start with it."""
        return self.first[0]

    def __init__(self, event_id: int, partition: int, changes: list[SeatChange]) -> None:
        self.event_id = event_id
        self.partition = partition
        self.changes = changes
        self.first = parse_version(changes[0].version)
        self.last = parse_version(changes[-1].version)
        self._json: str | None = None
        self._msgpack: bytes | None = None
        # Outboxes that hold this batch and have not sent it yet (see EventRoom._busy).
        self.unsent = 0

    def frame(self) -> Deltas:
        return Deltas(
            event_id=self.event_id,
            partition=self.partition,
            version=self.changes[-1].version,
            changes=self.changes,
        )

    def encoded(self, encoder: FrameEncoder, msgpack: bool) -> str | bytes:
        if msgpack:
            if self._msgpack is None:
                self._msgpack = encoder.msgpack(self.frame())
            return self._msgpack
        if self._json is None:
            self._json = encoder.json(self.frame())
        return self._json

    def after(self, version: tuple[int, int]) -> Batch | None:
        """The part of this batch newer than ``version`` (None if nothing is)."""
        if self.first > version:
            return self
        if self.last <= version:
            return None
        rest = [c for c in self.changes if parse_version(c.version) > version]
        return Batch(self.event_id, self.partition, rest) if rest else None


class _Partition:
    __slots__ = (
        "cursor",
        "dispatched",
        "flush_handle",
        "key",
        "last_batch",
        "last_flush",
        "pending",
        "task",
    )

    def __init__(self, key: str) -> None:
        self.key = key
        self.cursor = ZERO_VERSION  # last stream id read
        self.dispatched = ZERO_VERSION  # last version handed to subscribers
        self.pending: list[SeatChange] = []
        self.flush_handle: asyncio.TimerHandle | None = None
        self.last_flush = float("-inf")
        self.last_batch: Batch | None = None
        self.task: asyncio.Task[None] | None = None


class EventRoom:
    """The subscribers of one event on this replica and the tailers of its partitions."""

    def __init__(self, hub: LiveHub, event_id: int, partitions: int) -> None:
        self.hub = hub
        self.event_id = event_id
        self.parts = [_Partition(stream_key(event_id, p)) for p in range(partitions)]
        self.subscribers: set[Outbox] = set()
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_handle: asyncio.TimerHandle | None = None
        # Set by stop(): the tailers end on it even if their cancellation was lost.
        self.stopped = False

    @property
    def partitions(self) -> int:
        return len(self.parts)

    def versions(self) -> list[str]:
        return [p.dispatched for p in self.parts]

    def push(self, p: int, changes: list[SeatChange], last_id: str) -> None:
        """New entries from the tailer of partition ``p``; flushes now or arms the timer."""
        part = self.parts[p]
        part.cursor = last_id
        if not changes:
            if not part.pending:
                part.dispatched = last_id
            return
        part.pending.extend(changes)
        if part.flush_handle is not None:
            return
        loop = asyncio.get_running_loop()
        delay = part.last_flush + self.hub.settings.coalesce_ms / 1000 - loop.time()
        if delay <= 0 and not self._busy(part):
            self.flush(p)
        else:
            part.flush_handle = loop.call_later(max(delay, _BUSY_RETRY_S), self._due, p)

    def _busy(self, part: _Partition) -> bool:
        """Is half or more of the room still sending the previous frame of this partition?

        Then the server is behind (a few stuck clients cannot make it so), and the next
        frame waits, up to ``_MAX_WINDOWS`` coalescing windows: under overload fewer,
        larger frames go out, fewer sends for the same changes, and queues stay short.
        """
        last = part.last_batch
        return last is not None and last.unsent >= max(2, len(self.subscribers) // 2)

    def _due(self, p: int) -> None:
        part = self.parts[p]
        part.flush_handle = None
        loop = asyncio.get_running_loop()
        window = self.hub.settings.coalesce_ms / 1000
        if self._busy(part) and loop.time() - part.last_flush < _MAX_WINDOWS * window:
            part.flush_handle = loop.call_later(_BUSY_RETRY_S, self._due, p)
            return
        self.flush(p)

    def flush(self, p: int) -> None:
        part = self.parts[p]
        if part.flush_handle is not None:
            part.flush_handle.cancel()  # when called directly, before the timer
            part.flush_handle = None
        if not part.pending:
            return
        batch = Batch(self.event_id, p, part.pending)
        part.pending = []
        part.dispatched = batch.changes[-1].version
        part.last_flush = asyncio.get_running_loop().time()
        part.last_batch = batch
        queued = 0
        for outbox in tuple(self.subscribers):
            queued += outbox.put(batch)
        batch.unsent += queued

    def broadcast(self, frame: Frame) -> None:
        for outbox in tuple(self.subscribers):
            outbox.put(frame)

    def stop(self) -> None:
        self.stopped = True
        for part in self.parts:
            if part.flush_handle is not None:
                part.flush_handle.cancel()
            if part.task is not None:
                part.task.cancel()
        if self.close_handle is not None:
            self.close_handle.cancel()


class UserSession:
    """One connection on the user channel."""

    def __init__(self, sub: str, outbox: Outbox, cursor: str) -> None:
        self.sub = sub
        self.outbox = outbox
        self.key = user_events_key(sub)
        self.cursor = cursor
        self.holds: dict[str, asyncio.Task[None]] = {}


class LiveHub:
    """Rooms, tailers, user sessions and hold warnings of one API replica."""

    def __init__(
        self,
        settings: LiveSettings,
        redis: RedisCluster,
        tail_redis: RedisCluster,
        partitions: PartitionLookup,
        holds: HoldLookup | None = None,
        queue: QueuePush | None = None,
    ) -> None:
        self.settings = settings
        self.queue = queue
        self.redis = redis
        self.tail_redis = tail_redis
        self.encoder = FrameEncoder()
        self._partitions = partitions
        self._holds = holds
        self._rooms: dict[int, EventRoom] = {}
        self._tailers = 0
        self._users: set[UserSession] = set()
        self._outboxes: set[Outbox] = set()
        # Client address -> its open connections here (only while it has any).
        self._per_client: dict[str, int] = {}
        self._client_of: dict[Outbox, str] = {}
        self._lookup_cache: dict[int, tuple[float, int | None]] = {}
        self._poller: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.tail_redis.initialize()  # the tailers route by the slot map
        except Exception as exc:  # start anyway; the tailers retry
            log.warning("Redis Cluster unavailable for the live hub: %s", exc)
        self._poller = asyncio.create_task(self._poll_users(), name="live-user-poller")
        if self.queue is not None:
            self.queue.start()

    async def stop(self) -> None:
        """Tell every client to reconnect elsewhere and stop every task."""
        self._closing = True
        if self.queue is not None:
            await self.queue.stop()
        for outbox in tuple(self._outboxes):
            outbox.close(CLOSE_GOING_AWAY, "server shutting down")
        tasks: list[asyncio.Task[Any]] = []
        if self._poller is not None:
            self._poller.cancel()
            tasks.append(self._poller)
        for room in tuple(self._rooms.values()):
            room.stop()
            tasks.extend(p.task for p in room.parts if p.task is not None)
        for session in tuple(self._users):
            tasks.extend(session.holds.values())
        tasks.extend(self._background)  # rooms being opened: their joiners get an error
        self._rooms.clear()
        LIVE_TAILERS.dec(self._tailers)
        self._tailers = 0
        left = await _cancel_all(tasks, _STOP_TIMEOUT_S)
        if left:
            log.warning(
                "live hub stopped with %d task(s) still running: %s",
                len(left),
                ", ".join(sorted(t.get_name() for t in left)),
            )

    def register(self, outbox: Outbox, client: str | None = None) -> None:
        """Count a new connection of ``client`` (an address key): AtCapacity past
        ``max_connections``, ClientAtCapacity past ``max_connections_per_ip``."""
        if self._closing or len(self._outboxes) >= self.settings.max_connections:
            raise AtCapacity("this server is at its connection limit")
        cap = self.settings.max_connections_per_ip
        if client is not None:
            held = self._per_client.get(client, 0)
            if cap > 0 and held >= cap:
                raise ClientAtCapacity(
                    f"too many live connections from this address (at most {cap})"
                )
            self._per_client[client] = held + 1
            self._client_of[outbox] = client
        self._outboxes.add(outbox)

    def unregister(self, outbox: Outbox) -> None:
        self._outboxes.discard(outbox)
        client = self._client_of.pop(outbox, None)
        if client is not None:
            left = self._per_client.get(client, 1) - 1
            if left > 0:
                self._per_client[client] = left
            else:
                self._per_client.pop(client, None)

    def connections_of(self, client: str) -> int:
        """Open connections of one client address on this replica."""
        return self._per_client.get(client, 0)

    # -- event channel -------------------------------------------------------------------

    async def partitions_of(self, event_id: int) -> int | None:
        now = time.monotonic()
        cached = self._lookup_cache.get(event_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        count = await self._partitions(event_id)
        if len(self._lookup_cache) >= _LOOKUP_CACHE_SIZE:
            self._lookup_cache.clear()
        ttl = _LOOKUP_CACHE_S if count else _UNKNOWN_CACHE_S
        self._lookup_cache[event_id] = (now + ttl, count)
        return count

    async def join_event(self, event_id: int, outbox: Outbox) -> tuple[EventRoom, list[str]]:
        """Subscribe ``outbox`` to the event; returns the room and the versions every
        later frame follows (the client's starting point)."""
        if self._closing:
            raise LiveUnavailable("server shutting down")
        room = self._rooms.get(event_id)
        if room is None:
            try:
                count = await self.partitions_of(event_id)
            except Exception as exc:
                raise LiveUnavailable(str(exc)) from exc
            if count is None or count < 1:
                raise UnknownEvent(f"no event {event_id}")
            if self._closing:  # stop() ran during the lookup
                raise LiveUnavailable("server shutting down")
            room = self._rooms.get(event_id)  # another connection may have opened it
            if room is None:
                if self._tailers + count > self.settings.max_partitions:
                    raise AtCapacity("this server tails as many event streams as it may")
                room = EventRoom(self, event_id, count)
                self._rooms[event_id] = room
                self._tailers += count
                LIVE_TAILERS.inc(count)
                self._background.add(
                    asyncio.create_task(self._open_room(room), name=f"live-open-{event_id}")
                )
        if room.close_handle is not None:
            room.close_handle.cancel()
            room.close_handle = None
        try:
            # _open_room always settles ``ready`` (also when cancelled or timed out);
            # the bound is a second line of defence, the shield keeps the room's
            # future intact for the other joiners when this one gives up.
            async with asyncio.timeout(_OPEN_TIMEOUT_S + 1.0):
                await asyncio.shield(room.ready)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise LiveUnavailable(str(exc) or type(exc).__name__) from exc
        if room.stopped:  # stop() or a failed open won the race
            raise LiveUnavailable("event stream closed; retry")
        # No await between here and the return: the versions and the subscription are
        # taken at the same instant, so every later batch follows these versions.
        room.subscribers.add(outbox)
        return room, room.versions()

    def leave_event(self, room: EventRoom, outbox: Outbox) -> None:
        room.subscribers.discard(outbox)
        outbox.discard()
        if not room.subscribers and self._rooms.get(room.event_id) is room:
            loop = asyncio.get_running_loop()
            if room.close_handle is None:
                room.close_handle = loop.call_later(
                    self.settings.linger_s, self._close_room_if_idle, room
                )

    def _close_room_if_idle(self, room: EventRoom) -> None:
        room.close_handle = None
        if room.subscribers or self._rooms.get(room.event_id) is not room:
            return
        del self._rooms[room.event_id]
        self._tailers -= room.partitions
        LIVE_TAILERS.dec(room.partitions)
        room.stop()

    async def _open_room(self, room: EventRoom) -> None:
        task = asyncio.current_task()
        try:
            async with asyncio.timeout(_OPEN_TIMEOUT_S):
                versions = [await self._stream_info(self.redis, part.key) for part in room.parts]
            if self._closing or room.stopped:
                raise LiveUnavailable("server shutting down")
            # No await from here on: every tailer starts, or none does.
            for p, (part, info) in enumerate(zip(room.parts, versions, strict=True)):
                last = ZERO_VERSION if info is None else info.last_generated
                part.cursor = part.dispatched = last
                part.task = asyncio.create_task(
                    self._tail(room, p), name=f"live-tail-{room.event_id}-{p}"
                )
            room.ready.set_result(None)
        except BaseException as exc:  # the joiners see the failure; the next join retries
            # Also on cancellation (stop()): a joiner waiting on ``ready`` must never
            # be left waiting for a room that will not open.
            if not isinstance(exc, asyncio.CancelledError):
                log.warning("opening event %s failed: %r", room.event_id, exc)
            if self._rooms.get(room.event_id) is room:
                del self._rooms[room.event_id]
                self._tailers -= room.partitions
                LIVE_TAILERS.dec(room.partitions)
            room.stop()
            if not room.ready.done():
                failure = exc if isinstance(exc, Exception) else LiveUnavailable("stopped")
                room.ready.set_exception(failure)
                room.ready.exception()  # mark retrieved: a room nobody awaited must not warn
            if not isinstance(exc, Exception):
                raise
        finally:
            if task is not None:
                self._background.discard(task)

    async def _tail(self, room: EventRoom, p: int) -> None:
        part = room.parts[p]
        backoff = 0.05
        block = self.settings.block_ms
        count = self.settings.read_count
        # ``room.stopped``, not just the cancellation, ends the loop: redis-py sends each
        # command under ``asyncio.wait_for`` when the client has a socket_timeout, and on
        # Python 3.11 wait_for drops a cancel that arrives just as the send completes
        # (CPython gh-86296). The XREAD then runs on as if nothing happened and, without
        # this check, so would the loop: forever, with stop() waiting for it.
        while not room.stopped:
            try:
                # XREAD has "movable keys": routed by key, redis-py would first ask a node
                # COMMAND GETKEYS on every call. Send it to the slot's node directly; after
                # a MOVED the client's slot map is updated and the retry goes to the new one.
                node = self.tail_redis.get_node_from_key(part.key)
                reply = cast(
                    Any,
                    await self.tail_redis.execute_command(
                        "XREAD",
                        "COUNT",
                        count,
                        "BLOCK",
                        block,
                        "STREAMS",
                        part.key,
                        part.cursor,
                        target_nodes=node,
                    ),
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis, cluster map, socket: log, back off, go on
                log.warning(
                    "tailing %s failed (%s: %s); retrying", part.key, type(exc).__name__, exc
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                with contextlib.suppress(Exception):
                    await self.tail_redis.initialize()  # no-op unless the map must be rebuilt
                await self._check_tail_gap(room, p)
                continue
            backoff = 0.05
            if not reply or room.stopped:
                continue
            entries = reply[0][1]
            changes: list[SeatChange] = []
            for entry_id, fields in entries:
                change = seat_change_from_stream(entry_id, fields)
                if change is not None:
                    changes.append(change)
                elif fields.get(b"status") == b"reload":
                    # The partition was rebuilt: what came before means nothing now.
                    # Send what we have, tell clients to refetch the map, and go on
                    # with the changes after the rebuild.
                    reload_id = entry_id.decode()
                    room.push(p, changes, reload_id)
                    changes = []
                    room.flush(p)
                    part.dispatched = reload_id
                    room.broadcast(
                        Resync(
                            event_id=room.event_id, partition=p, version=reload_id, reason="rebuilt"
                        )
                    )
            room.push(p, changes, entries[-1][0].decode())

    async def _check_tail_gap(self, room: EventRoom, p: int) -> None:
        """After a Redis error: if the stream lost entries we had not read, say so."""
        part = room.parts[p]
        try:
            info = await self._stream_info(self.redis, part.key)
        except Exception:
            return
        if info is None:
            return
        cursor = parse_version(part.cursor)
        if info.has_gap_after(cursor) or parse_version(info.last_generated) < cursor:
            reason: Literal["gap_trimmed", "stream_lost"] = (
                "stream_lost" if parse_version(info.last_generated) < cursor else "gap_trimmed"
            )
            room.flush(p)
            part.cursor = part.dispatched = info.last_generated
            room.broadcast(
                Resync(
                    event_id=room.event_id, partition=p, version=info.last_generated, reason=reason
                )
            )

    async def replay(
        self, event_id: int, partition: int, since: str, upto: str, limit: int | None = None
    ) -> AsyncIterator[Deltas | Resync]:
        """The frames that take a client from ``since`` to ``upto`` (exclusive, inclusive):
        the stream's entries in order, or one ``Resync`` when they are not all there or
        there are more than ``limit`` of them (default ``replay_max_entries``).

        One read of at most ``limit + 1`` entries decides before anything is sent, so a
        client far behind costs one bounded read and one small frame, not the stream.
        """
        key = stream_key(event_id, partition)
        start = parse_version(since)
        end = parse_version(upto)
        if start >= end:
            if start > end:
                info = await self._stream_info(self.redis, key)
                if info is None or parse_version(info.last_generated) < start:
                    yield Resync(
                        event_id=event_id,
                        partition=partition,
                        version=upto,
                        reason="unknown_version",
                    )
            return
        limit = self.settings.replay_max_entries if limit is None else max(0, limit)
        pipe = self.redis.pipeline()
        pipe.xrange(key, min="(" + since, max=upto, count=limit + 1)
        pipe.execute_command("XINFO", "STREAM", key)
        entries, raw_info = await pipe.execute(raise_on_error=False)
        if isinstance(entries, Exception):
            raise entries
        info = None if isinstance(raw_info, Exception) else _StreamInfo.parse(raw_info)
        # Read, then checked: trimming only removes a prefix, so if the entry after the
        # cursor is still there *after* the read, the read missed nothing.
        if info is None or info.has_gap_after(start):
            yield Resync(event_id=event_id, partition=partition, version=upto, reason="gap_trimmed")
            return
        if len(entries) > limit:
            yield Resync(
                event_id=event_id, partition=partition, version=upto, reason="too_far_behind"
            )
            return
        if any(f.get(b"status") == b"reload" for _, f in entries):
            yield Resync(event_id=event_id, partition=partition, version=upto, reason="rebuilt")
            return
        changes = [c for c in (seat_change_from_stream(i, f) for i, f in entries) if c is not None]
        chunk = max(1, self.settings.read_count)
        for i in range(0, len(changes), chunk):
            part = changes[i : i + chunk]
            yield Deltas(
                event_id=event_id, partition=partition, version=part[-1].version, changes=part
            )

    async def _stream_info(self, client: RedisCluster, key: str) -> _StreamInfo | None:
        try:
            raw = await client.execute_command("XINFO", "STREAM", key)
        except ResponseError as exc:
            if "no such key" in str(exc).lower():
                return None
            raise
        return _StreamInfo.parse(raw)

    # -- user channel --------------------------------------------------------------------

    async def join_user(self, sub: str, outbox: Outbox, since: str | None) -> UserSession:
        """Start delivering ``sub``'s notifications after ``since`` (default: from now)."""
        key = user_events_key(sub)
        if since is None:
            last = cast(Any, await self.redis.xrevrange(key, max="+", min="-", count=1))
            since = last[0][0].decode() if last else ZERO_VERSION
        else:
            since = format_version(parse_version(since))
        session = UserSession(sub, outbox, since)
        self._users.add(session)
        return session

    def leave_user(self, session: UserSession) -> None:
        self._users.discard(session)
        if self.queue is not None:
            self.queue.forget(session)
        for task in session.holds.values():
            task.cancel()
        session.holds.clear()

    async def _poll_users(self) -> None:
        interval = self.settings.user_poll_ms / 1000
        while not self._closing:  # see _tail: a cancellation may be lost
            await asyncio.sleep(interval)
            sessions = list(self._users)
            for i in range(0, len(sessions), _USER_PIPELINE_CHUNK):
                chunk = sessions[i : i + _USER_PIPELINE_CHUNK]
                try:
                    await self._poll_chunk(chunk)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # keep polling; a Redis hiccup is not fatal
                    log.warning("polling user notifications failed: %s", exc)

    async def _poll_chunk(self, sessions: list[UserSession]) -> None:
        pipe = self.redis.pipeline()
        for session in sessions:
            pipe.xrange(session.key, min="(" + session.cursor, max="+", count=_USER_READ_COUNT)
        replies = await pipe.execute(raise_on_error=False)
        for session, reply in zip(sessions, replies, strict=True):
            if isinstance(reply, Exception) or not reply:
                continue
            for entry_id, fields in reply:
                update = order_update_from_stream(entry_id, fields)
                if update is not None:
                    session.outbox.put(update)
            session.cursor = reply[-1][0].decode()

    async def watch_queue(self, session: UserSession, event_id: int) -> None:
        """Push ``session``'s place in the event's waiting room (api/live/queue_push.py)."""
        if self.queue is None:
            session.outbox.put(ErrorFrame(code="unavailable", detail="no waiting rooms here"))
            return
        await self.queue.watch(session, event_id)

    async def watch_hold(self, session: UserSession, hold_id: str) -> None:
        """Warn ``session`` before its hold ``hold_id`` expires (if the hold is the caller's)."""
        if hold_id in session.holds:
            return
        if len(session.holds) >= _MAX_WATCHED_HOLDS:
            session.outbox.put(ErrorFrame(code="too_many_holds", detail="too many watched holds"))
            return
        try:
            found = await self._holds(hold_id, session.sub) if self._holds is not None else None
        except Exception as exc:
            log.warning("looking up hold %s failed: %s", hold_id, exc)
            session.outbox.put(ErrorFrame(code="unavailable", detail="try again shortly"))
            return
        if found is None:
            # Same answer for "not yours" and "no such hold": existence is not leaked.
            session.outbox.put(ErrorFrame(code="hold_not_found", detail="no such live hold"))
            return
        event_id, expires_at = found
        session.outbox.put(HoldWatched(hold_id=hold_id, event_id=event_id, expires_at=expires_at))
        session.holds[hold_id] = asyncio.create_task(
            self._warn_hold(session, hold_id, event_id, expires_at), name=f"live-hold-{hold_id}"
        )

    async def _warn_hold(
        self, session: UserSession, hold_id: str, event_id: int, expires_at: int
    ) -> None:
        lead_ms = int(self.settings.hold_warning_s * 1000)
        warned_for = 0
        assert self._holds is not None
        try:
            while not self._closing:  # see _tail: a cancellation may be lost
                now = now_ms()
                if warned_for != expires_at:
                    wait_ms = expires_at - lead_ms - now
                else:
                    wait_ms = expires_at - now + 500  # after the expiry: did it end?
                if wait_ms > 0:
                    await asyncio.sleep(wait_ms / 1000)
                try:
                    found = await self._holds(hold_id, session.sub)
                except Exception as exc:  # Redis away for a moment: ask again shortly
                    log.warning("checking hold %s failed: %s", hold_id, exc)
                    await asyncio.sleep(1.0)
                    continue
                now = now_ms()
                if found is None:
                    reason: Literal["expired", "ended"] = (
                        "expired" if now >= expires_at - 1000 else "ended"
                    )
                    session.outbox.put(HoldGone(hold_id=hold_id, reason=reason))
                    return
                if found[1] != expires_at:  # extended: warn again before the new expiry
                    expires_at = found[1]
                    continue
                if warned_for != expires_at:
                    warned_for = expires_at
                    session.outbox.put(
                        HoldExpiring(
                            hold_id=hold_id,
                            event_id=event_id,
                            expires_at=expires_at,
                            seconds_left=max(0, (expires_at - now) // 1000),
                        )
                    )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("watching hold %s failed: %s", hold_id, exc)
        finally:
            session.holds.pop(hold_id, None)


class _StreamInfo:
    __slots__ = ("added", "first", "last_generated", "length", "max_deleted")

    def __init__(
        self, last_generated: str, first: str | None, length: int, added: int, max_deleted: str
    ) -> None:
        self.last_generated = last_generated
        self.first = first
        self.length = length
        self.added = added
        self.max_deleted = max_deleted

    @classmethod
    def parse(cls, raw: Any) -> _StreamInfo:
        if isinstance(raw, list):  # RESP2 flat list
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        info = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}

        def text(v: Any) -> str:
            return v.decode() if isinstance(v, bytes) else str(v)

        first = info.get("first-entry")
        first_id = text(first[0]) if first else None
        return cls(
            last_generated=text(info["last-generated-id"]),
            first=first_id,
            length=int(info["length"]),
            added=int(info.get("entries-added", info["length"])),
            max_deleted=text(info.get("max-deleted-entry-id", ZERO_VERSION)),
        )

    def has_gap_after(self, cursor: tuple[int, int]) -> bool:
        """Could an entry newer than ``cursor`` have been trimmed or deleted?"""
        if cursor < parse_version(self.max_deleted):
            return True
        if self.added <= self.length:
            return False  # nothing ever left the stream
        if self.first is None:
            # Everything was trimmed: only a cursor at the very end is safe.
            return cursor < parse_version(self.last_generated)
        # Trimming removes a prefix; entries from ``first`` on are all there. The last
        # trimmed one is older than ``first`` but unknown, so anything before is suspect.
        return cursor < _before(parse_version(self.first))


def _before(version: tuple[int, int]) -> tuple[int, int]:
    ms, seq = version
    return (ms, seq - 1) if seq > 0 else (ms - 1, 2**64 - 1)


async def _cancel_all(tasks: list[asyncio.Task[Any]], within_s: float) -> set[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait for them, at most ``within_s`` seconds; the ones still
    running by then are returned (and left cancelled).

    A task that is still running a moment after its cancel is cancelled again: on
    Python 3.11 ``asyncio.wait_for`` (redis-py sends every command under it when the
    client has a socket_timeout) loses a cancel that arrives as its inner step ends,
    and the task then awaits on as if never cancelled.
    """
    pending = {t for t in tasks if not t.done()}
    if not pending:
        return pending
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within_s
    while pending:
        for task in pending:
            task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            break
        _, pending = await asyncio.wait(pending, timeout=min(_RECANCEL_S, left))
    return pending


@contextlib.asynccontextmanager
async def running(hub: LiveHub) -> AsyncIterator[LiveHub]:
    """``async with running(hub):`` starts the hub and stops it on the way out."""
    await hub.start()
    try:
        yield hub
    finally:
        await hub.stop()
