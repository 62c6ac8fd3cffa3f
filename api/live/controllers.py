"""The live WebSocket channels.

``WS /api/v1/events/{event_id}/live`` (public) and ``WS /api/v1/me/live`` (token).
Frames, close codes and the resume rules are in ``core/live.py``; the fan-out in
``api/live/hub.py``; the why in docs/decisions/0701-live-seat-map.md.

Each connection runs three tasks: a reader (client frames, heartbeat bookkeeping),
a writer (drains the connection's bounded outbox onto the socket; the only task that
sends) and a heartbeat. Whatever goes wrong with one client ends in a close frame
with a code and a reason, never in an exception escaping the handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, cast

import jwt
from litestar import WebSocket, websocket
from litestar.exceptions import WebSocketDisconnect
from litestar.params import FromPath
from redis.exceptions import RedisError

from api.auth.principal import bearer_token
from api.live.hub import (
    WS_CLOSED,
    WS_DELIVERY,
    AtCapacity,
    Batch,
    Channel,
    ClientAtCapacity,
    LiveHub,
    LiveUnavailable,
    Outbox,
    UnknownEvent,
)
from api.metrics import WS_CONNECTIONS, WS_FRAMES
from api.ratelimit import address_key, client_ip
from api.startup import Network, parse_trusted_proxies
from core.errors import DomainError
from core.live import (
    CLOSE_BAD_FRAME,
    CLOSE_FORBIDDEN,
    CLOSE_HEARTBEAT_TIMEOUT,
    CLOSE_TOO_MANY_CONNECTIONS,
    CLOSE_TRY_AGAIN,
    CLOSE_UNAUTHORIZED,
    CLOSE_UNKNOWN_EVENT,
    SUBPROTOCOL_JSON,
    SUBPROTOCOL_MSGPACK,
    Auth,
    BadVersion,
    ClientPing,
    ClientPong,
    Deltas,
    EventClientFrame,
    Frame,
    FrameError,
    Hello,
    Ping,
    Pong,
    Resync,
    UserClientFrame,
    UserHello,
    WatchHold,
    WatchQueue,
    decode_client_frame,
    format_version,
    parse_since,
    parse_version,
    valid_subject,
)
from core.settings import Settings

log = logging.getLogger("ticketbuster.api.live")

EVENT_PATH: Final = "/api/v1/events/{event_id:int}/live"
USER_PATH: Final = "/api/v1/me/live"
MAX_EVENT_ID: Final = 2**63 - 1
# How long a close frame may take to leave (a stuck client must not hold the handler).
_CLOSE_TIMEOUT_S: Final = 2.0
# Clock skew allowed on the token's expiry (as the HTTP verifier allows).
_TOKEN_LEEWAY_S: Final = 30.0

ClientFrame = EventClientFrame | UserClientFrame


class _Close(Exception):
    """End the connection with this close code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class LiveConnection:
    """One accepted WebSocket: encoding, the outbox, the reader/writer/heartbeat tasks."""

    def __init__(self, socket: WebSocket[Any, Any, Any], hub: LiveHub, channel: Channel) -> None:
        self.socket = socket
        self.hub = hub
        self.channel: Channel = channel
        self.msgpack = _subprotocol(socket) == SUBPROTOCOL_MSGPACK
        self.outbox = Outbox(hub.settings.queue_frames)
        self.last_seen = time.monotonic()
        # Per partition: the newest version this client has (deltas up to it are skipped).
        self.last_sent: dict[int, tuple[int, int]] = {}
        # User channel: when the token runs out (epoch seconds); a fresh auth frame renews.
        self.token_expires: float | None = None
        self._frames = WS_FRAMES.labels(channel)

    async def send_now(self, item: Frame | Batch) -> None:
        """Send one frame (only before ``serve`` starts, or from the writer)."""
        if isinstance(item, Batch):
            payload: str | bytes = item.encoded(self.hub.encoder, self.msgpack)
        elif self.msgpack:
            payload = self.hub.encoder.msgpack(item)
        else:
            payload = self.hub.encoder.json(item)
        if isinstance(payload, bytes):
            await self.socket.send_bytes(payload)
        else:
            await self.socket.send_text(payload)
        self._frames.inc()

    async def receive(self) -> ClientFrame | None:
        """The next client frame; None when the client has gone; FrameError if bad."""
        try:
            message = await self.socket.receive()
        except WebSocketDisconnect:
            return None
        if message["type"] != "websocket.receive":
            return None
        self.last_seen = time.monotonic()
        text = message.get("text")
        data: str | bytes = text if text is not None else (message.get("bytes") or b"")
        return decode_client_frame(data, user_channel=self.channel == "user", msgpack=self.msgpack)

    async def close(self, code: int, reason: str) -> None:
        WS_CLOSED.labels(self.channel, str(code)).inc()
        with contextlib.suppress(Exception):
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                # A close reason is at most 123 bytes of UTF-8.
                short = reason.encode()[:123].decode(errors="ignore")
                await self.socket.close(code=code, reason=short)

    async def serve(self, on_frame: Callable[[ClientFrame], Awaitable[None]]) -> None:
        """Run until the client leaves or the outbox closes (then send the close frame)."""
        reader = asyncio.create_task(self._read_loop(on_frame))
        writer = asyncio.create_task(self._write_loop())
        beat = asyncio.create_task(self._heartbeat())
        closed = asyncio.create_task(self.outbox.wait_closed())
        tasks = (reader, writer, beat, closed)
        try:
            await asyncio.wait({reader, writer, closed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in (reader, writer):
            if task.done() and not task.cancelled() and task.exception() is not None:
                exc = task.exception()
                log.error("live %s connection failed: %r", self.channel, exc, exc_info=exc)
                self.outbox.close(1011, "internal error")
        reader_ok = reader.done() and not reader.cancelled() and reader.exception() is None
        if reader_ok and reader.result():
            return  # the client left; nobody to send a close frame to
        if self.outbox.closed is not None:
            await self.close(*self.outbox.closed)

    async def _read_loop(self, on_frame: Callable[[ClientFrame], Awaitable[None]]) -> bool:
        """Returns True when the client went away."""
        while True:
            try:
                frame = await self.receive()
            except FrameError as exc:
                self.outbox.close(exc.code, exc.reason)
                return False
            if frame is None:
                return True
            if isinstance(frame, ClientPing):
                self.outbox.put(Pong(t=frame.t))
                continue
            try:
                await on_frame(frame)
            except _Close as exc:
                self.outbox.close(exc.code, exc.reason)
                return False

    async def _write_loop(self) -> None:
        while True:
            item = await self.outbox.get()
            if item is None:
                return
            if not isinstance(item, Batch):
                if isinstance(item, Resync):
                    self.last_sent[item.partition] = parse_version(item.version)
                if not await self._send(item):
                    return
                continue
            try:
                frame = item
                seen = self.last_sent.get(item.partition)
                if seen is not None:
                    newer = item.after(seen)
                    if newer is None:
                        continue
                    frame = newer
                self.last_sent[frame.partition] = frame.last
                if not await self._send(frame):
                    return
                WS_DELIVERY.observe(max(0.0, time.time() - frame.committed_ms() / 1000))
            finally:
                item.unsent -= 1  # sent (or given up): the room paces frames on this

    async def _send(self, item: Frame | Batch) -> bool:
        try:
            await self.send_now(item)
        except Exception as exc:  # the client is gone; the reader sees it too
            log.debug("live %s send failed: %r", self.channel, exc)
            return False
        return True

    async def _heartbeat(self) -> None:
        interval = self.hub.settings.heartbeat_s
        timeout = self.hub.settings.heartbeat_timeout_s
        while True:
            await asyncio.sleep(interval)
            if time.monotonic() - self.last_seen > timeout:
                reason = f"no frame from the client in {timeout:g}s"
                self.outbox.close(CLOSE_HEARTBEAT_TIMEOUT, reason)
                return
            if (
                self.token_expires is not None
                and time.time() > self.token_expires + _TOKEN_LEEWAY_S
            ):
                self.outbox.close(CLOSE_UNAUTHORIZED, "the token expired; send a fresh auth frame")
                return
            self.outbox.put(Ping(t=int(time.time() * 1000)))


def _subprotocol(socket: WebSocket[Any, Any, Any]) -> str | None:
    offered = socket.scope.get("subprotocols") or []
    for name in (SUBPROTOCOL_MSGPACK, SUBPROTOCOL_JSON):
        if name in offered:
            return name
    return None


def _hub(socket: WebSocket[Any, Any, Any]) -> LiveHub | None:
    return cast(LiveHub | None, getattr(socket.app.state, "live_hub", None))


@functools.lru_cache(maxsize=4)
def _trusted_proxies(spec: str) -> list[Network]:
    return parse_trusted_proxies(spec)


def client_key(socket: WebSocket[Any, Any, Any]) -> str:
    """Whose sockets this one counts among: the client address (as the rate limiter
    sees it, X-Forwarded-For only from trusted proxies), an IPv6 client's /64."""
    settings: Settings = socket.app.state.settings
    trusted = _trusted_proxies(settings.api.trusted_proxies)
    return address_key(client_ip(socket.scope, trusted))


async def _run(
    socket: WebSocket[Any, Any, Any],
    channel: Channel,
    session: Callable[[LiveConnection, LiveHub], Awaitable[None]],
) -> None:
    """Accept, register, run ``session``; every failure becomes a close frame."""
    await socket.accept(subprotocols=_subprotocol(socket))
    hub = _hub(socket)
    if hub is None:
        with contextlib.suppress(Exception):
            await socket.close(code=CLOSE_TRY_AGAIN, reason="live updates are starting")
        return
    conn = LiveConnection(socket, hub, channel)
    try:
        hub.register(conn.outbox, client_key(socket))
    except ClientAtCapacity as exc:
        await conn.close(CLOSE_TOO_MANY_CONNECTIONS, str(exc))
        return
    except AtCapacity as exc:
        await conn.close(CLOSE_TRY_AGAIN, str(exc))
        return
    gauge = WS_CONNECTIONS.labels(channel)
    gauge.inc()
    try:
        await session(conn, hub)
    except _Close as exc:
        await conn.close(exc.code, exc.reason)
    except FrameError as exc:
        await conn.close(exc.code, exc.reason)
    except WebSocketDisconnect:
        pass
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("live %s connection: Redis unavailable: %s", channel, exc)
        await conn.close(CLOSE_TRY_AGAIN, "live updates unavailable, reconnect shortly")
    except Exception:
        log.exception("live %s connection failed", channel)
        await conn.close(1011, "internal error")
    finally:
        gauge.dec()
        hub.unregister(conn.outbox)


# -- event channel ----------------------------------------------------------------------


@websocket(EVENT_PATH, name="live_event")
async def live_event(socket: WebSocket[Any, Any, Any], event_id: FromPath[int]) -> None:
    """Live seat map: ``hello`` (versions), then ``deltas``; ``?since=`` resumes."""
    since = socket.query_params.get("since")

    async def session(conn: LiveConnection, hub: LiveHub) -> None:
        await _event_session(conn, hub, event_id, since)

    await _run(socket, "event", session)


async def _event_session(
    conn: LiveConnection, hub: LiveHub, event_id: int, raw_since: str | None
) -> None:
    if not 0 < event_id <= MAX_EVENT_ID:
        raise _Close(CLOSE_UNKNOWN_EVENT, f"unknown event {event_id}")
    try:
        room, versions = await hub.join_event(event_id, conn.outbox)
    except UnknownEvent:
        raise _Close(CLOSE_UNKNOWN_EVENT, f"unknown event {event_id}") from None
    except AtCapacity as exc:
        raise _Close(CLOSE_TRY_AGAIN, str(exc)) from None
    except LiveUnavailable:
        raise _Close(CLOSE_TRY_AGAIN, "live updates unavailable, reconnect shortly") from None
    try:
        try:
            since = parse_since(raw_since, room.partitions) if raw_since else None
        except BadVersion as exc:
            raise _Close(CLOSE_BAD_FRAME, f"bad since: {exc}") from None
        await conn.send_now(
            Hello(event_id=event_id, versions=versions, heartbeat_s=hub.settings.heartbeat_s)
        )
        # One replay budget for the whole reconnect, however many partitions it spans.
        budget = hub.settings.replay_max_entries
        for p, current in enumerate(versions):
            conn.last_sent[p] = parse_version(current)
            start = since[p] if since else None
            if start is None:
                continue
            resynced = False
            async for frame in hub.replay(event_id, p, start, current, limit=budget):
                resynced = resynced or isinstance(frame, Resync)
                if isinstance(frame, Deltas):
                    budget -= len(frame.changes)
                await conn.send_now(frame)
            if not resynced:
                # The client may be ahead of this replica's tailer: skip what it has.
                conn.last_sent[p] = max(parse_version(start), parse_version(current))

        async def on_frame(frame: ClientFrame) -> None:
            if not isinstance(frame, ClientPong):
                raise _Close(CLOSE_BAD_FRAME, f"unexpected {type(frame).__name__} frame")

        await conn.serve(on_frame)
    finally:
        hub.leave_event(room, conn.outbox)


# -- user channel -----------------------------------------------------------------------


@websocket(USER_PATH, name="live_me")
async def live_me(socket: WebSocket[Any, Any, Any]) -> None:
    """The caller's order status changes and hold warnings. Token: a first
    ``{"type": "auth", "token": ...}`` frame, ``?token=``/``?access_token=``, or the
    ``Authorization`` header."""
    query = socket.query_params
    # Authorization header or ?access_token= (as for HTTP), or ?token=, or a first frame.
    token = bearer_token(socket.scope) or query.get("token")
    since = query.get("since")

    async def session(conn: LiveConnection, hub: LiveHub) -> None:
        await _user_session(conn, hub, token, since)

    await _run(socket, "user", session)


async def _verify(conn: LiveConnection, token: str) -> str:
    """The token's subject (close 4401 if invalid); records when the token expires."""
    verifier = getattr(conn.socket.app.state, "token_verifier", None)
    if verifier is None:
        raise _Close(CLOSE_TRY_AGAIN, "authentication is starting")
    try:
        principal = await verifier.verify(token)
    except DomainError as exc:
        raise _Close(CLOSE_UNAUTHORIZED, exc.detail) from None
    sub = str(principal.sub)
    if not valid_subject(sub):
        raise _Close(CLOSE_UNAUTHORIZED, "the token's subject is not usable")
    # Verified above; only its expiry is read here.
    exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    conn.token_expires = float(exp) if isinstance(exp, int | float) else None
    return sub


async def _user_session(
    conn: LiveConnection, hub: LiveHub, token: str | None, raw_since: str | None
) -> None:
    if token is None:
        try:
            async with asyncio.timeout(hub.settings.auth_timeout_s):
                first = await conn.receive()
        except TimeoutError:
            raise _Close(CLOSE_UNAUTHORIZED, "a token is required (auth frame)") from None
        if first is None:
            return
        if not isinstance(first, Auth):
            raise _Close(CLOSE_UNAUTHORIZED, "a token is required: send an auth frame first")
        token = first.token
    sub = await _verify(conn, token)
    try:
        since = format_version(parse_version(raw_since)) if raw_since else None
    except BadVersion as exc:
        raise _Close(CLOSE_BAD_FRAME, f"bad since: {exc}") from None
    user = await hub.join_user(sub, conn.outbox, since)
    try:
        await conn.send_now(
            UserHello(sub=sub, version=user.cursor, heartbeat_s=hub.settings.heartbeat_s)
        )

        async def on_frame(frame: ClientFrame) -> None:
            if isinstance(frame, ClientPong):
                return
            if isinstance(frame, Auth):  # a token refresh must be the same user's
                previous = conn.token_expires
                if await _verify(conn, frame.token) != sub:
                    conn.token_expires = previous
                    raise _Close(CLOSE_FORBIDDEN, "that token belongs to another user")
                return
            if isinstance(frame, WatchHold):
                await hub.watch_hold(user, frame.hold_id)
                return
            if isinstance(frame, WatchQueue):
                await hub.watch_queue(user, frame.event_id)
                return
            raise _Close(CLOSE_BAD_FRAME, f"unexpected {type(frame).__name__} frame")

        await conn.serve(on_frame)
    finally:
        hub.leave_user(user)


def create_route_handlers(settings: Settings) -> list[Any]:
    """The live channels, for ``api.app`` (the hub comes from ``api.live.lifespan``)."""
    return [live_event, live_me]
