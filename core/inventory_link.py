"""The inventory gateway's transport: auto-pipelined Lua script calls on a Redis Cluster.

``core/inventory.py`` (the gateway) builds every key and maps every reply; this module
only moves ``EVALSHA`` calls to the primary that owns their slot and their replies back.
It replaces redis-py's cluster client on the hot path, where that client cost as much CPU
per call as the whole HTTP framework (it hashes every key of a call to check the slot,
takes a pooled connection per call and writes each command on its own).

How a call travels:

- The slot comes from the call's hash tag, computed once per partition by the caller
  (``Route``): one CRC16 per partition, not per key per call.
- One connection per primary, shared by every caller of the process. Calls made during
  one turn of the event loop leave in one socket write (the technique ioredis calls
  auto-pipelining), and while a batch awaits its replies the next calls gather and leave
  together when it is answered (one batch in flight per connection); Redis answers in
  order, so replies are matched to callers by position.
- Redirections and errors that prove the script did not run are retried, bounded:
  ``MOVED`` (the slot map is refreshed), ``ASK`` (``ASKING`` then the call on the target),
  ``NOSCRIPT`` (``SCRIPT LOAD`` then the call), ``TRYAGAIN``/``CLUSTERDOWN``/``LOADING``/
  ``MASTERDOWN``, and a connection that failed before the call was written.
- A call whose outcome is unknown (the connection broke after the write, or no reply
  within ``timeout_s``) is never re-sent unless the caller marked the script read-only:
  a state-changing script that ran once must not run twice (``OutcomeUnknown``).
- Each primary has a breaker: after a failed connect or a stalled reply, calls for its
  slots fail at once (``NodeDown``) for ``down_s``; then one connect is tried again (and
  the slot map refreshed, since a failover may have moved the slots). A slow or dead
  shard never holds up callers of the healthy ones: nothing is shared between nodes
  except the slot map.
"""

from __future__ import annotations

import asyncio
import binascii
import collections
import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any, Final, cast

import hiredis

log = logging.getLogger("ticketbuster.inventory.link")

SLOTS: Final = 16384
# Redirections/retries of one call before it gives up (each proves the call did not run).
MAX_ATTEMPTS: Final = 5
# Calls waiting on one primary before new ones are refused (memory bound under a stall).
MAX_PENDING: Final = 20_000

Address = tuple[str, int]


class LinkError(Exception):
    """A call did not produce a reply."""


class NodeDown(LinkError):
    """The primary could not be reached; the call was not sent."""


class OutcomeUnknown(LinkError):
    """The call was sent but its reply was lost: it may have run."""


class ScriptError(LinkError):
    """Redis answered the call with an error (a bug, not an outage)."""


def key_slot(key: bytes) -> int:
    """The cluster slot of a key: CRC16 (XMODEM) of its hash tag, as Redis computes it."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key, 0) % SLOTS


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


def _arg(value: Any) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int | float):
        return repr(value).encode()
    raise TypeError(f"cannot send {type(value).__name__} to Redis")


def encode_command(*parts: Any) -> bytes:
    """A RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(parts)]
    out.extend(_bulk(_arg(p)) for p in parts)
    return b"".join(out)


class Script:
    """A Lua script known by its SHA1; loaded into a node on demand (NOSCRIPT)."""

    __slots__ = ("load_command", "read_only", "replicated", "sha", "source")

    def __init__(self, source: str, *, read_only: bool = False, replicated: bool = False) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()
        self.read_only = read_only
        # Followed by ``WAIT 1 <replica_wait_ms>`` when the link has a replica wait.
        self.replicated = replicated
        self.load_command = encode_command(b"SCRIPT", b"LOAD", self.source)


class Route:
    """Where calls with these keys go: their slot, and their keys pre-encoded."""

    __slots__ = ("encoded_keys", "keys", "slot")

    def __init__(self, keys: Sequence[str]) -> None:
        raw = [k.encode() for k in keys]
        slots = {key_slot(k) for k in raw}
        if len(slots) != 1:
            raise ValueError("every key of a script call must be in one slot")
        self.slot = slots.pop()
        self.keys = raw
        self.encoded_keys = _bulk(b"%d" % len(raw)) + b"".join(_bulk(k) for k in raw)


def _evalsha(script: Script, route: Route, args: Sequence[Any]) -> bytes:
    head = b"*%d\r\n$7\r\nEVALSHA\r\n" % (3 + len(route.keys) + len(args))
    return b"".join((head, _bulk(script.sha), route.encoded_keys, *(_bulk(_arg(a)) for a in args)))


class _Connection(asyncio.Protocol):
    """One TCP connection to one node. Commands are buffered and written together: at the
    end of the loop turn when nothing is in flight, else when the batch in flight is
    answered (a write to a loopback socket cost as much CPU as the order's logic)."""

    def __init__(self, address: Address, loop: asyncio.AbstractEventLoop) -> None:
        self.address = address
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.reader = hiredis.Reader()
        self.pending: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.sent_at: collections.deque[float] = collections.deque()
        self.buffer: list[bytes] = []
        self.waiting: list[asyncio.Future[Any]] = []
        self.flush_scheduled = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        pending = self.pending
        while True:
            reply = self.reader.gets()
            if reply is False:
                if not pending and self.buffer and not self.flush_scheduled:
                    # The batch in flight is answered: what queued meanwhile goes now (after
                    # the callers just woken have added their next calls).
                    self.flush_scheduled = True
                    self.loop.call_soon(self.flush)
                return
            if not pending:  # a reply nobody asked for: the stream is out of step
                self.close(OutcomeUnknown(f"unexpected reply from {self.address}"))
                return
            future = pending.popleft()
            self.sent_at.popleft()
            if not future.done():  # a caller that gave up still consumed its reply slot
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.close(OutcomeUnknown(f"connection to {self.address} lost"))

    def send(self, *commands: bytes) -> list[asyncio.Future[Any]]:
        """Queue commands (written contiguously, in order); one future per reply."""
        futures = [self.loop.create_future() for _ in commands]
        self.buffer.extend(commands)
        self.waiting.extend(futures)
        # One batch in flight per connection: while one awaits its replies, new calls
        # gather and leave together when it is answered (data_received), so under load
        # a write carries every call of one round trip, not only of one loop turn.
        if not self.flush_scheduled and not self.pending:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)
        return futures

    def flush(self) -> None:
        self.flush_scheduled = False
        if not self.buffer:
            return
        data, futures = b"".join(self.buffer), self.waiting
        self.buffer, self.waiting = [], []
        if self.closed or self.transport is None or self.transport.is_closing():
            for future in futures:
                if not future.done():
                    future.set_exception(NodeDown(f"{self.address} is not connected"))
            return
        now = time.monotonic()
        self.pending.extend(futures)
        self.sent_at.extend(now for _ in futures)
        self.transport.write(data)

    def oldest_sent(self) -> float | None:
        return self.sent_at[0] if self.sent_at else None

    def close(self, exc: LinkError) -> None:
        if self.closed:
            return
        self.closed = True
        if self.transport is not None:
            self.transport.abort()
        for future in self.pending:
            if not future.done():
                future.set_exception(exc)
        self.pending.clear()
        self.sent_at.clear()
        not_sent = NodeDown(f"{self.address} is not connected")
        for future in self.waiting:
            if not future.done():
                future.set_exception(not_sent)
        self.waiting.clear()
        self.buffer.clear()


class _Node:
    """A primary: its connection, (re)made on demand, behind a breaker."""

    def __init__(self, link: ScriptLink, address: Address) -> None:
        self.link = link
        self.address = address
        self.conn: _Connection | None = None
        self.connecting: asyncio.Future[_Connection] | None = None
        self.down_until = 0.0
        self.failures = 0
        self.watchdog: asyncio.TimerHandle | None = None

    async def connection(self) -> _Connection:
        conn = self.conn
        if conn is not None and not conn.closed:
            return conn
        if time.monotonic() < self.down_until:
            raise NodeDown(f"Redis node {self.address[0]}:{self.address[1]} is down")
        if self.connecting is None:
            self.connecting = asyncio.ensure_future(self._connect())
        return await asyncio.shield(self.connecting)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Connection(self.address, loop), *self.address),
                self.link.timeout_s,
            )
        except (OSError, TimeoutError) as exc:
            self.trip()
            raise NodeDown(f"Redis node {self.address[0]}:{self.address[1]}: {exc}") from exc
        finally:
            self.connecting = None
        self.conn = conn
        self.failures = 0
        return conn

    def trip(self) -> None:
        """Open the breaker: calls fail fast for a while; the slot map may have changed."""
        self.failures += 1
        self.down_until = time.monotonic() + min(
            self.link.down_s * self.failures, self.link.down_s * 4
        )
        self.link.topology_changed()

    def arm_watchdog(self) -> None:
        if self.watchdog is None:
            loop = asyncio.get_running_loop()
            self.watchdog = loop.call_later(self.link.timeout_s / 2, self._check)

    def _check(self) -> None:
        self.watchdog = None
        conn = self.conn
        if conn is None or conn.closed:
            return
        oldest = conn.oldest_sent()
        if oldest is None:
            return
        if time.monotonic() - oldest > self.link.timeout_s:
            # A reply overdue by the whole timeout: the node is stalled. Its callers learn
            # now (outcome unknown), and new calls fail fast until it answers again.
            log.warning("Redis node %s:%s stalled; failing its calls", *self.address)
            conn.close(OutcomeUnknown(f"no reply from {self.address} in {self.link.timeout_s}s"))
            self.trip()
            return
        self.arm_watchdog()

    def close(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        if self.conn is not None:
            self.conn.close(NodeDown("link closed"))
            self.conn = None


_RETRY_PREFIXES: Final = (b"TRYAGAIN", b"CLUSTERDOWN", b"LOADING", b"MASTERDOWN")


class ScriptLink:
    """Script calls to the primary owning each slot, auto-pipelined per node.

    ``seeds``: addresses of any cluster nodes (the slot map is read from the first that
    answers). ``timeout_s`` bounds a connect and the wait for a reply; ``down_s`` is how
    long a primary's breaker stays open after it failed. ``replica_wait_ms`` > 0: a script
    marked ``replicated`` is followed, in the same write, by ``WAIT 1 <replica_wait_ms>``
    (its reply waits for one replica's acknowledgement, or that long);
    ``unreplicated`` counts the calls no replica acknowledged in time (the script ran).
    """

    def __init__(
        self,
        seeds: Iterable[Address],
        *,
        timeout_s: float = 2.0,
        down_s: float = 1.0,
        replica_wait_ms: int = 0,
    ) -> None:
        self.seeds = list(dict.fromkeys(seeds))
        self.timeout_s = timeout_s
        self.down_s = down_s
        self.replica_wait_ms = replica_wait_ms
        self._wait = encode_command(b"WAIT", b"1", b"%d" % replica_wait_ms)
        self.unreplicated = 0
        self._slots: list[Address | None] = [None] * SLOTS
        self._nodes: dict[Address, _Node] = {}
        self._refreshing: asyncio.Future[None] | None = None
        self._refreshed_at = 0.0
        self._stale = True

    @classmethod
    def for_client(cls, client: Any, replica_wait_ms: int = 0) -> ScriptLink:
        """A link to the cluster a redis-py ``RedisCluster`` client points at (its seed nodes
        and socket timeout)."""
        return cls(
            [(n.host, int(n.port)) for n in client.nodes_manager.startup_nodes.values()],
            timeout_s=float(client.connection_kwargs.get("socket_timeout") or 2.0),
            replica_wait_ms=replica_wait_ms,
        )

    # -- topology -------------------------------------------------------------------------

    def topology_changed(self) -> None:
        self._stale = True

    async def _refresh(self) -> None:
        if self._refreshing is None:
            self._refreshing = asyncio.ensure_future(self._read_slots())
        await asyncio.shield(self._refreshing)

    async def _read_slots(self) -> None:
        try:
            known = [a for a in self._nodes if a not in self.seeds]
            errors: list[str] = []
            for address in [*self.seeds, *known]:
                try:
                    reply = await self._command(address, encode_command(b"CLUSTER", b"SLOTS"))
                except LinkError as exc:
                    errors.append(str(exc))
                    continue
                if isinstance(reply, hiredis.ReplyError) or not isinstance(reply, list):
                    errors.append(f"{address}: {reply!r}")
                    continue
                slots: list[Address | None] = [None] * SLOTS
                for entry in reply:
                    start, end, primary = int(entry[0]), int(entry[1]), entry[2]
                    host = primary[0].decode() or address[0]
                    target = (host, int(primary[1]))
                    for slot in range(start, end + 1):
                        slots[slot] = target
                self._slots = slots
                self._stale = False
                self._refreshed_at = time.monotonic()
                return
            raise NodeDown("no Redis Cluster node answered: " + "; ".join(errors[-3:]))
        finally:
            self._refreshing = None

    def breaker_states(self) -> dict[str, str]:
        """Each known primary's breaker: "open" while its calls fail fast, else "closed"."""
        now = time.monotonic()
        return {
            f"{host}:{port}": "open" if now < node.down_until else "closed"
            for (host, port), node in sorted(self._nodes.items())
        }

    def _node(self, address: Address) -> _Node:
        node = self._nodes.get(address)
        if node is None:
            node = self._nodes[address] = _Node(self, address)
        return node

    async def _command(self, address: Address, command: bytes) -> Any:
        """One plain command to one node (topology reads, SCRIPT LOAD)."""
        node = self._node(address)
        conn = await node.connection()
        (future,) = conn.send(command)
        node.arm_watchdog()
        return await future

    async def _primary(self, slot: int) -> Address:
        # A stale map is re-read at most every 100 ms; meanwhile the last one is used.
        if self._stale and (
            self._slots[slot] is None or time.monotonic() - self._refreshed_at > 0.1
        ):
            await self._refresh()
        address = self._slots[slot]
        if address is None:
            raise NodeDown(f"no primary serves slot {slot}")
        return address

    # -- calls ----------------------------------------------------------------------------

    async def run(self, script: Script, route: Route, args: Sequence[Any]) -> Any:
        """Run ``script`` with the route's keys and ``args``; its reply (bytes, ints, lists).

        Raises NodeDown (not sent), OutcomeUnknown (sent, may have run; never retried for
        a script that changes state) or ScriptError (Redis answered an error).
        """
        command = _evalsha(script, route, args)
        address = await self._primary(route.slot)
        asking = False
        for _ in range(MAX_ATTEMPTS):
            node = self._node(address)
            try:
                try:
                    conn = await node.connection()
                except NodeDown:
                    # A failover moves the slot to another node: one look at a fresh map.
                    self.topology_changed()
                    fresh = await self._primary(route.slot)
                    if fresh == address:
                        raise
                    address = fresh
                    continue
                if len(conn.pending) >= MAX_PENDING:
                    raise NodeDown(f"Redis node {address[0]}:{address[1]} is overloaded")
                head = (b"*1\r\n$6\r\nASKING\r\n",) if asking else ()
                waits = script.replicated and self.replica_wait_ms > 0
                futures = conn.send(*head, command, *((self._wait,) if waits else ()))
                node.arm_watchdog()
                if waits:
                    future, acked = futures[-2:]
                    reply = await future
                    if not isinstance(reply, hiredis.ReplyError) and await acked == 0:
                        self.unreplicated += 1
                else:
                    reply = await futures[-1]
            except OutcomeUnknown:
                if not script.read_only:
                    raise
                address = await self._primary(route.slot)
                continue
            if not isinstance(reply, hiredis.ReplyError):
                return reply
            message = str(reply).encode()
            asking = False
            if message.startswith(b"MOVED "):
                address = self._redirect(message)
                self._slots[route.slot] = address
                self.topology_changed()
            elif message.startswith(b"ASK "):
                address = self._redirect(message)
                asking = True
            elif message.startswith(b"NOSCRIPT"):
                loaded = await self._command(address, script.load_command)
                if isinstance(loaded, hiredis.ReplyError):
                    raise ScriptError(f"SCRIPT LOAD failed: {loaded}")
            elif message.startswith(_RETRY_PREFIXES):
                await asyncio.sleep(0.05)
                self.topology_changed()
                address = await self._primary(route.slot)
            else:
                raise ScriptError(str(reply))
        raise NodeDown(f"slot {route.slot}: gave up after {MAX_ATTEMPTS} redirections")

    @staticmethod
    def _redirect(message: bytes) -> Address:
        # "MOVED 3999 127.0.0.1:6381" / "ASK 3999 127.0.0.1:6381"
        target = message.split()[2].decode()
        host, _, port = target.rpartition(":")
        return host, int(port)

    async def load(self, scripts: Iterable[Script]) -> None:
        """Load scripts on every primary now (optional warm-up; NOSCRIPT is handled anyway)."""
        await self._refresh()
        for address in set(a for a in self._slots if a is not None):
            for script in scripts:
                await self._command(address, script.load_command)

    def close(self) -> None:
        for node in self._nodes.values():
            node.close()
        self._nodes.clear()
