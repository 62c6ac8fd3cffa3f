"""The live hub against the real Redis Cluster: tailing, coalescing, replay, gaps.

The inventory scripts write the change stream; here the test writes it with XADD in
the same format (fields ``seats``, ``status``), so the hub is checked on its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, cast

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.exceptions import ResponseError

from api.live import hub as hub_module
from api.live.hub import (
    AtCapacity,
    Batch,
    ClientAtCapacity,
    LiveHub,
    LiveUnavailable,
    Outbox,
    UnknownEvent,
)
from core.live import CLOSE_SLOW_CONSUMER, Deltas, Resync, parse_version, stream_key
from core.settings import LiveSettings, Settings
from tests.conftest import fresh_event_id

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _client(settings: Settings, **kwargs: Any) -> RedisCluster:
    nodes = [ClusterNode(h, p) for h, p in settings.redis.startup_nodes()]
    return RedisCluster(startup_nodes=nodes, decode_responses=False, **kwargs)


@pytest.fixture
async def hub(settings: Settings) -> Any:
    live = LiveSettings(coalesce_ms=100, block_ms=200, linger_s=0.2, queue_frames=8)
    redis = _client(settings)
    tail = _client(settings, socket_timeout=5.0)
    known: set[int] = set()

    async def partitions(event_id: int) -> int | None:
        return 1 if event_id in known else None

    h = LiveHub(live, redis, tail, partitions)
    h.known = known  # type: ignore[attr-defined]
    await h.start()
    yield h
    await h.stop()
    await redis.aclose()
    await tail.aclose()


async def _xadd(redis: RedisCluster, event_id: int, seats: str, status: str, **kw: Any) -> str:
    entry = await redis.xadd(stream_key(event_id, 0), {"seats": seats, "status": status}, **kw)
    return entry.decode() if isinstance(entry, bytes) else str(entry)


async def _drain(outbox: Outbox, until_version: str, timeout: float = 5.0) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            item = await outbox.get()
            assert item is not None, outbox.closed
            if isinstance(item, Batch):
                item.unsent -= 1  # as the connection's writer does once it has sent it
            got.append(item)
            if isinstance(item, Batch) and item.changes[-1].version == until_version:
                return got


async def _collect(outbox: Outbox, into: list[Any]) -> None:
    """A healthy client in the background: takes every item as it comes."""
    while (item := await outbox.get()) is not None:
        if isinstance(item, Batch):
            item.unsent -= 1
        into.append(item)


async def test_tailer_fans_out_every_change_in_order(hub: LiveHub, redis_cluster: Any) -> None:
    event_id = fresh_event_id()
    hub.known.add(event_id)  # type: ignore[attr-defined]
    await _xadd(redis_cluster, event_id, "A-1-1", "free")  # before anyone watches
    a, b = Outbox(64), Outbox(64)
    room, versions = await hub.join_event(event_id, a)
    _, versions_b = await hub.join_event(event_id, b)
    assert versions == versions_b and versions[0] != "0-0"

    written = [
        await _xadd(redis_cluster, event_id, f"A-1-{i}", "held" if i % 2 else "free")
        for i in range(1, 41)
    ]
    for outbox in (a, b):
        batches = await _drain(outbox, written[-1])
        seen = [c.version for batch in batches for c in batch.changes]
        assert seen == written  # every change, once, in stream order
        # 40 XADDs in a burst arrive in fewer frames (coalesced), not one frame each.
        assert len(batches) < 40
    assert batches[0].changes[0].seats == ["A-1-1"]
    assert batches[0].changes[0].status == "held"
    hub.leave_event(room, a)
    hub.leave_event(room, b)


async def test_unknown_event_is_refused(hub: LiveHub) -> None:
    with pytest.raises(UnknownEvent):
        await hub.join_event(fresh_event_id(), Outbox(4))


async def test_replay_gives_the_gap_then_live_continues(hub: LiveHub, redis_cluster: Any) -> None:
    event_id = fresh_event_id()
    hub.known.add(event_id)  # type: ignore[attr-defined]
    first = await _xadd(redis_cluster, event_id, "B-1-1", "held")
    missed = [await _xadd(redis_cluster, event_id, f"B-1-{i}", "held") for i in range(2, 7)]
    outbox = Outbox(64)
    room, versions = await hub.join_event(event_id, outbox)
    assert versions == [missed[-1]]
    frames = [f async for f in hub.replay(event_id, 0, first, versions[0])]
    assert all(isinstance(f, Deltas) for f in frames)
    assert [c.version for f in frames for c in f.changes] == missed  # type: ignore[union-attr]
    # Nothing to replay when the client is current.
    assert [f async for f in hub.replay(event_id, 0, versions[0], versions[0])] == []
    hub.leave_event(room, outbox)


async def test_replay_past_its_limit_is_one_resync_and_nothing_else(
    hub: LiveHub, redis_cluster: Any
) -> None:
    event_id = fresh_event_id()
    first = await _xadd(redis_cluster, event_id, "L-1-1", "held")
    missed = [await _xadd(redis_cluster, event_id, f"L-1-{i}", "held") for i in range(2, 8)]
    last = missed[-1]
    exact = [f async for f in hub.replay(event_id, 0, first, last, limit=len(missed))]
    assert [c.version for f in exact for c in f.changes] == missed  # type: ignore[union-attr]
    for limit in (len(missed) - 1, 0):
        frames = [f async for f in hub.replay(event_id, 0, first, last, limit=limit)]
        assert len(frames) == 1 and isinstance(frames[0], Resync), frames
        assert frames[0].reason == "too_far_behind" and frames[0].version == last
    # Without a limit, the setting's applies (1000 by default): all of them.
    frames = [f async for f in hub.replay(event_id, 0, first, last)]
    assert len(frames) == 1 and isinstance(frames[0], Deltas) and frames[0].version == last


async def test_one_client_address_is_capped_and_gets_its_places_back(hub: LiveHub) -> None:
    cap = hub.settings.max_connections_per_ip
    mine = [Outbox(4) for _ in range(cap)]
    for outbox in mine:
        hub.register(outbox, "192.0.2.7")
    with pytest.raises(ClientAtCapacity, match=f"at most {cap}"):
        hub.register(Outbox(4), "192.0.2.7")
    other = Outbox(4)
    hub.register(other, "192.0.2.8")  # another address is not affected
    hub.unregister(mine[0])
    assert hub.connections_of("192.0.2.7") == cap - 1
    again = Outbox(4)
    hub.register(again, "192.0.2.7")
    for outbox in (*mine[1:], again, other):
        hub.unregister(outbox)
    assert hub.connections_of("192.0.2.7") == hub.connections_of("192.0.2.8") == 0
    assert not hub._per_client and not hub._client_of  # nothing kept for gone clients
    # ClientAtCapacity is an AtCapacity: code that only knows the replica's limit copes.
    assert issubclass(ClientAtCapacity, AtCapacity)


async def test_replay_of_a_trimmed_gap_asks_for_a_resync(hub: LiveHub, redis_cluster: Any) -> None:
    event_id = fresh_event_id()
    hub.known.add(event_id)  # type: ignore[attr-defined]
    old = await _xadd(redis_cluster, event_id, "C-1-1", "held")
    for i in range(2, 30):
        await _xadd(redis_cluster, event_id, f"C-1-{i}", "held", maxlen=10, approximate=False)
    last = await _xadd(redis_cluster, event_id, "C-1-30", "held", maxlen=10, approximate=False)
    frames = [f async for f in hub.replay(event_id, 0, old, last)]
    assert len(frames) == 1 and isinstance(frames[0], Resync)
    assert frames[0].reason == "gap_trimmed" and frames[0].version == last
    # A client from the future (or a lost stream) is told to resync too.
    frames = [f async for f in hub.replay(event_id, 0, "99999999999999-0", last)]
    assert len(frames) == 1 and isinstance(frames[0], Resync)
    assert frames[0].reason == "unknown_version"


async def test_a_slow_subscriber_is_dropped_and_others_keep_flowing(
    hub: LiveHub, redis_cluster: Any
) -> None:
    event_id = fresh_event_id()
    hub.known.add(event_id)  # type: ignore[attr-defined]
    slow, fast = Outbox(hub.settings.queue_frames), Outbox(1000)
    room, _ = await hub.join_event(event_id, slow)
    await hub.join_event(event_id, fast)
    written = [
        await _xadd(redis_cluster, event_id, "D-1-0", "held"),
    ]
    batches: list[Any] = []
    reader = asyncio.create_task(_collect(fast, batches))
    # More coalesced frames than the slow outbox holds (one burst per coalescing window).
    for i in range(hub.settings.queue_frames + 3):
        written.append(await _xadd(redis_cluster, event_id, f"D-1-{i + 1}", "held"))
        await asyncio.sleep(hub.settings.coalesce_ms / 1000 + 0.02)
    await asyncio.sleep(0.3)
    reader.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await reader  # nothing of this test keeps running on the session loop
    assert [c.version for b in batches for c in b.changes] == written
    assert slow.closed is not None and slow.closed[0] == CLOSE_SLOW_CONSUMER
    assert len(slow) == 0  # its queue was freed at once
    hub.leave_event(room, slow)
    hub.leave_event(room, fast)


async def test_a_rebuilt_partition_tells_clients_to_refetch(
    hub: LiveHub, redis_cluster: Any
) -> None:
    event_id = fresh_event_id()
    hub.known.add(event_id)  # type: ignore[attr-defined]
    await _xadd(redis_cluster, event_id, "E-1-1", "held")
    outbox = Outbox(64)
    room, _ = await hub.join_event(event_id, outbox)
    before = await _xadd(redis_cluster, event_id, "E-1-2", "held")
    reload_id = await _xadd(redis_cluster, event_id, "", "reload")
    after = await _xadd(redis_cluster, event_id, "E-1-3", "sold")
    got: list[Any] = []
    async with asyncio.timeout(5):
        while not (got and isinstance(got[-1], Batch) and got[-1].last >= parse_version(after)):
            got.append(await outbox.get())
    kinds = [
        (type(g).__name__, [c.version for c in g.changes] if isinstance(g, Batch) else g.version)
        for g in got
    ]
    assert kinds == [("Batch", [before]), ("Resync", reload_id), ("Batch", [after])]
    # A replay across the rebuild cannot be trusted either.
    frames = [f async for f in hub.replay(event_id, 0, before, after)]
    assert len(frames) == 1 and isinstance(frames[0], Resync) and frames[0].reason == "rebuilt"
    hub.leave_event(room, outbox)


async def test_an_idle_room_stops_tailing_after_the_linger(
    hub: LiveHub, redis_cluster: Any
) -> None:
    event_id = fresh_event_id()
    hub.known.add(event_id)  # type: ignore[attr-defined]
    await _xadd(redis_cluster, event_id, "F-1-1", "held")
    for _ in range(20):  # a reconnect storm reuses one room
        outbox = Outbox(4)
        room, _ = await hub.join_event(event_id, outbox)
        hub.leave_event(room, outbox)
    assert hub._rooms.get(event_id) is room
    tailer = room.parts[0].task
    await asyncio.sleep(hub.settings.linger_s + 0.3)
    assert event_id not in hub._rooms
    assert tailer is not None and tailer.done()
    assert hub._tailers == sum(r.partitions for r in hub._rooms.values())


async def test_stopping_the_hub_closes_every_connection_with_going_away(
    settings: Settings, redis_cluster: Any
) -> None:
    live = LiveSettings(block_ms=200)
    redis, tail = _client(settings), _client(settings, socket_timeout=5.0)

    async def one_partition(event_id: int) -> int | None:
        return 1

    h = LiveHub(live, redis, tail, one_partition)
    await h.start()
    outbox = Outbox(4)
    h.register(outbox)
    room, _ = await h.join_event(fresh_event_id(), outbox)
    await h.stop()
    assert outbox.closed == (1001, "server shutting down")
    assert all(p.task is None or p.task.done() for p in room.parts)
    await redis.aclose()
    await tail.aclose()


async def test_frames_wait_while_most_clients_are_still_sending_the_last_one(
    hub: LiveHub, redis_cluster: Any
) -> None:
    event_id = fresh_event_id()
    hub.known.add(event_id)  # type: ignore[attr-defined]
    # Four subscribers whose writers are stuck: nothing they hold counts as sent.
    stuck = [Outbox(1000) for _ in range(4)]
    for outbox in stuck:
        room, _ = await hub.join_event(event_id, outbox)
    written = []
    for i in range(16):  # 16 changes over ~0.8 s: eight windows' worth
        written.append(await _xadd(redis_cluster, event_id, f"G-1-{i + 1}", "held"))
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.6)
    queued = []
    while len(stuck[0]):
        queued.append(await stuck[0].get())
    assert [c.version for b in queued for c in b.changes] == written  # nothing lost
    # Paced at five windows while the room is behind: at most one frame per 500 ms
    # (unpaced it would be one per 100 ms, eight or nine frames).
    assert len(queued) <= 3
    for outbox in stuck:
        hub.leave_event(room, outbox)


async def test_a_connect_storm_opens_one_room_with_one_tailer(
    hub: LiveHub, redis_cluster: Any
) -> None:
    event_id = fresh_event_id()
    hub.known.add(event_id)  # type: ignore[attr-defined]
    await _xadd(redis_cluster, event_id, "H-1-1", "held")
    tailers_before = hub._tailers
    outboxes = [Outbox(16) for _ in range(300)]
    joined = await asyncio.gather(*(hub.join_event(event_id, o) for o in outboxes))
    rooms = {id(room) for room, _ in joined}
    assert len(rooms) == 1 and len({tuple(v) for _, v in joined}) == 1
    assert hub._tailers == tailers_before + 1
    last = await _xadd(redis_cluster, event_id, "H-1-2", "sold")
    for outbox in outboxes[::50]:
        (batch,) = await _drain(outbox, last)
        assert [c.status for c in batch.changes] == ["sold"]
    room = joined[0][0]
    for outbox in outboxes:
        hub.leave_event(room, outbox)


# -- shutdown: every wait is bounded, whatever Redis or asyncio does ----------------------


class _LosingTail:
    """A tail client whose XREAD loses cancellations, as redis-py's does on Python 3.11:
    it sends each command under ``asyncio.wait_for`` (the client has a socket_timeout),
    and wait_for drops a cancel that arrives just as the send completes (CPython
    gh-86296). The read then blocks on for its full BLOCK as if never cancelled.

    ``lose`` cancels are lost (-1: all of them, until ``release`` is set)."""

    def __init__(self, lose: int) -> None:
        self.lose = lose
        self.lost = 0
        self.reads = 0
        self.release = asyncio.Event()

    def get_node_from_key(self, key: str) -> None:
        return None

    async def initialize(self) -> _LosingTail:
        return self

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self.reads += 1
        block_s = int(args[args.index("BLOCK") + 1]) / 1000
        deadline = asyncio.get_running_loop().time() + block_s
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    await self.release.wait()
                raise ConnectionError("released")
            except TimeoutError:
                return None  # BLOCK ran out: no entries
            except asyncio.CancelledError:
                if self.lose != -1 and self.lost >= self.lose:
                    raise
                self.lost += 1  # lost: read on


class _StreamsRedis:
    """The hub's main client: every stream is new (XINFO: no such key), or, with
    ``hang``, XINFO never answers (a Redis call with no reply)."""

    def __init__(self, hang: bool = False) -> None:
        self.hang = hang
        self.calls = 0

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.hang:
            await asyncio.Event().wait()
        raise ResponseError("ERR no such key")


def _fake_hub(tail: Any, redis: Any = None, **live: Any) -> LiveHub:
    async def one_partition(event_id: int) -> int | None:
        return 1

    settings = LiveSettings(**({"block_ms": 30_000, "linger_s": 0.1} | live))
    return LiveHub(settings, cast(Any, redis or _StreamsRedis()), cast(Any, tail), one_partition)


def _live_tasks(event_id: int) -> list[asyncio.Task[Any]]:
    return [
        t for t in asyncio.all_tasks() if t.get_name().endswith(f"-{event_id}-0") and not t.done()
    ]


async def test_stop_ends_a_tailer_mid_xread_even_when_its_cancel_is_lost() -> None:
    tail = _LosingTail(lose=1)
    h = _fake_hub(tail)  # XREAD BLOCK 30 s
    await h.start()
    event_id = fresh_event_id()
    outbox = Outbox(4)
    h.register(outbox)
    room, _ = await h.join_event(event_id, outbox)
    await asyncio.sleep(0.05)  # the tailer is blocked in its XREAD
    assert tail.reads == 1
    started = time.monotonic()
    async with asyncio.timeout(5):  # before the fix: waited for ever (the CI hang)
        await h.stop()
    assert time.monotonic() - started < 1.0
    assert tail.lost == 1  # the first cancel was indeed lost
    assert all(p.task is not None and p.task.done() for p in room.parts)
    assert outbox.closed == (1001, "server shutting down")
    assert _live_tasks(event_id) == []


async def test_stop_is_bounded_even_if_a_task_never_ends(monkeypatch: Any) -> None:
    monkeypatch.setattr(hub_module, "_STOP_TIMEOUT_S", 0.5)
    tail = _LosingTail(lose=-1)  # a Redis call that ignores every cancel
    h = _fake_hub(tail)
    await h.start()
    event_id = fresh_event_id()
    room, _ = await h.join_event(event_id, Outbox(4))
    await asyncio.sleep(0.05)
    started = time.monotonic()
    async with asyncio.timeout(5):
        await h.stop()
    assert 0.4 < time.monotonic() - started < 2.0  # gave up after _STOP_TIMEOUT_S
    assert tail.lost >= 2  # cancelled again and again meanwhile
    # Clean up: let the stuck read end, so nothing runs on into the next test.
    tail.release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(*(p.task for p in room.parts if p.task), return_exceptions=True)
    assert _live_tasks(event_id) == []


async def test_stop_while_a_join_waits_for_a_hung_redis_fails_the_join() -> None:
    redis = _StreamsRedis(hang=True)  # opening the room: XINFO never answers
    h = _fake_hub(_LosingTail(lose=0), redis)
    await h.start()
    event_id = fresh_event_id()
    join = asyncio.create_task(h.join_event(event_id, Outbox(4)))
    await asyncio.sleep(0.05)
    assert redis.calls == 1 and not join.done()
    async with asyncio.timeout(5):
        await h.stop()
        # The joiner is told to retry elsewhere, not left waiting for the room.
        with pytest.raises(LiveUnavailable):
            await join
    assert not h._background  # the room opener was cancelled, not left behind
    assert _live_tasks(event_id) == []
    with pytest.raises(LiveUnavailable):  # and nothing new starts after stop()
        await h.join_event(fresh_event_id(), Outbox(4))


async def test_an_idle_room_ends_its_tailer_even_when_the_cancel_is_lost() -> None:
    tail = _LosingTail(lose=1)
    h = _fake_hub(tail, block_ms=200)
    await h.start()
    event_id = fresh_event_id()
    outbox = Outbox(4)
    room, _ = await h.join_event(event_id, outbox)
    tailer = room.parts[0].task
    assert tailer is not None
    await asyncio.sleep(0.05)
    h.leave_event(room, outbox)  # linger 0.1 s, then the room closes
    async with asyncio.timeout(5):  # before the fix: the tailer read on for ever
        while not tailer.done():
            await asyncio.sleep(0.05)
    assert tail.lost == 1 and event_id not in h._rooms
    await h.stop()
