"""One realtime WebSocket connection: Phoenix channels over the local hub, as Supabase Realtime behaves.

A reader task handles inbound frames in order; one bounded outbox holds both replies and broadcast frames (the
hub hands it pre-encoded frames shared with every other subscriber). A connection whose outbox fills up is
closed (1013), so a slow reader never holds up the others.

Outboxes are drained by one callback per event loop (`Flusher`), not by a task per socket: waking 3,000 writer
tasks per broadcast cost more than the sends, and the 3,000 futures alive at once fed the cyclic GC into full
collections of 300 ms. The ASGI send of a writable socket finishes without suspending, so the flusher runs it to
completion in place; a send that does suspend (the transport is paused: that client reads slowly) is handed to
the connection's own writer task, which resumes it and drains that outbox while the flusher serves the others.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import weakref
from collections.abc import Coroutine
from typing import Any, Final

from litestar.connection import WebSocket
from litestar.types import Message as AsgiMessage
from litestar.types import WebSocketCloseEvent, WebSocketSendEvent

from shared.broadcast.local import ENCODING_JSON, EvictReason, Frame, LocalHub, Message, Wire
from shared.errors import BridgeError, Forbidden, Unauthorized

from . import phoenix
from .auth import TopicAuthorizer
from .phoenix import Inbound, Vsn

logger = logging.getLogger(__name__)

TOPIC_PREFIX: Final = "realtime:"
CLOSE_NORMAL: Final = 1000
CLOSE_GOING_AWAY: Final = 1001
CLOSE_TRY_AGAIN_LATER: Final = 1013


Suspended = tuple[Coroutine[Any, Any, None], "asyncio.Future[Any] | None"]
"""A send coroutine stopped at its first suspension, and the future it waits for (None: a bare yield)."""


def send_now(send: Any, message: AsgiMessage) -> Suspended | None:
    """Run one ASGI send up to its first suspension; None when it completed (the usual case: socket writable)."""
    coro = send(message)
    try:
        waiting = coro.send(None)
    except StopIteration:
        return None
    return coro, waiting


async def finish(suspended: Suspended) -> None:
    """Drive a send that `send_now` left suspended to its end, as a Task would: resume it once its future is done."""
    coro, waiting = suspended
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                await asyncio.wait((waiting,))
            waiting = coro.send(None)
    except StopIteration:
        return
    finally:
        coro.close()


def send_event(frame: Frame) -> WebSocketSendEvent | None:
    if isinstance(frame, str):
        return {"type": "websocket.send", "text": frame, "bytes": None}
    if isinstance(frame, bytes):
        return {"type": "websocket.send", "bytes": frame, "text": None}
    return None


class Flusher:
    """Drains the outboxes of one event loop's connections in one callback per batch of offers."""

    __slots__ = ("_loop", "_pending", "_scheduled", "_thread")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the registry below is keyed by the loop: no strong reference back
        self._thread = threading.get_ident()
        self._pending: collections.deque[Connection] = collections.deque()
        self._scheduled = False

    def schedule(self, conn: Connection) -> None:
        """Called from any thread; the flag is cleared before draining, so a late append schedules again."""
        self._pending.append(conn)
        loop = self._loop()
        if not self._scheduled and loop is not None:
            self._scheduled = True
            if threading.get_ident() == self._thread:
                loop.call_soon(self._flush)
            elif not loop.is_closed():
                loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        pending = self._pending
        while pending:
            pending.popleft().flush()


_flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Flusher] = weakref.WeakKeyDictionary()


def flusher_of(loop: asyncio.AbstractEventLoop) -> Flusher:
    flusher = _flushers.get(loop)
    if flusher is None:
        flusher = _flushers[loop] = Flusher(loop)
    return flusher


class ChannelMember:
    """One joined channel of one connection: the hub's sink for that topic."""

    __slots__ = ("ack", "conn", "join_ref", "receive_self", "subtopic", "token", "topic", "wire")

    def __init__(
        self, conn: Connection, topic: str, join_ref: str | None, token: str | None, *, ack: bool, self_: bool
    ) -> None:
        self.conn = conn
        self.topic = topic
        self.subtopic = topic.removeprefix(TOPIC_PREFIX)
        self.join_ref = join_ref
        self.token = token
        self.ack = ack
        self.receive_self = self_
        self.wire: Wire = conn.vsn

    def offer(self, frame: Frame) -> bool:
        return self.conn.offer(frame)

    def evict(self, reason: EvictReason) -> None:
        self.conn.evict(reason)


class Connection:
    def __init__(
        self,
        ws: WebSocket[Any, Any, Any],
        hub: LocalHub,
        authorizer: TopicAuthorizer,
        *,
        vsn: Vsn,
        apikey: str | None,
        idle_timeout_s: float,
        max_channels: int,
        max_queue: int,
    ) -> None:
        self.ws = ws
        self.hub = hub
        self.authorizer = authorizer
        self.vsn: Vsn = vsn
        self.apikey = apikey
        self.idle_timeout_s = idle_timeout_s
        self.max_channels = max_channels
        self.max_queue = max_queue
        self.channels: dict[str, ChannelMember] = {}
        self._out: collections.deque[Frame] = collections.deque()
        self._ready = asyncio.Event()  # wakes the writer task: a suspended send to finish, or the close
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._flusher = flusher_of(self._loop)
        self._queued = False  # in the flusher's pending queue
        self._suspended: Suspended | None = None  # owned by the writer task until that outbox is empty
        self._failed = False
        self._close: tuple[int, str] | None = None

    # -- outbox (called by the hub, possibly from another thread) --------------------------------------------
    def offer(self, frame: Frame) -> bool:
        if self._close is not None:
            return True  # closing: nothing more goes out, but this is not the subscriber lagging
        if len(self._out) >= self.max_queue:
            return False
        self._out.append(frame)
        if not self._queued:
            self._queued = True
            self._flusher.schedule(self)
        return True

    def flush(self) -> None:
        """Send what is queued now (on the loop, from the flusher); a send that suspends goes to the writer task."""
        self._queued = False
        if self._suspended is not None or self._failed or self._close is not None:
            return
        send = self.ws.send
        out = self._out
        while out:
            event = send_event(out.popleft())
            if event is None:
                continue
            try:
                suspended = send_now(send, event)
            except Exception:  # the client went away: the writer ends the connection
                self._failed = True
                self._ready.set()
                return
            if suspended is not None:
                self._suspended = suspended
                self._ready.set()
                return

    def evict(self, reason: EvictReason) -> None:
        if reason == "slow":
            logger.warning("realtime socket fell behind (%d frames queued): closing it", len(self._out))
            self._request_close(CLOSE_TRY_AGAIN_LATER, "slow consumer")
        else:
            self._request_close(CLOSE_GOING_AWAY, "server shutting down")

    def _request_close(self, code: int, reason: str) -> None:
        if self._close is None:
            self._close = (code, reason)
            self._out.clear()
            self._wake()

    def _wake(self) -> None:
        if threading.get_ident() == self._thread:
            self._ready.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._ready.set)

    def _send(self, frame: str) -> None:
        if not self.offer(frame):
            self.evict("slow")

    # -- tasks -------------------------------------------------------------------------------------------------
    async def run(self) -> None:
        writer = asyncio.create_task(self._writer())
        reader = asyncio.create_task(self._reader())
        try:
            await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for member in self.channels.values():
                self.hub.detach(member.subtopic, member)
            self.channels.clear()
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)

    async def _writer(self) -> None:
        """Finishes the sends the flusher could not (a slow client), and sends the close frame."""
        send = self.ws.send
        out = self._out
        while not self._failed:
            if self._suspended is not None:
                await finish(self._suspended)
                while out:
                    event = send_event(out.popleft())
                    if event is not None:
                        await send(event)
                self._suspended = None
            if self._close is not None:
                code, reason = self._close
                close: WebSocketCloseEvent = {"type": "websocket.close", "code": code, "reason": reason}
                await send(close)
                return
            self._ready.clear()
            await self._ready.wait()

    async def _reader(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    event = await self.ws.receive()
            except TimeoutError:
                logger.info("realtime socket idle for %.0f s: closing it", self.idle_timeout_s)
                self._request_close(CLOSE_NORMAL, "idle")
                await asyncio.sleep(self.idle_timeout_s)  # the writer closes; the wait ends with it
                return
            if event["type"] == "websocket.disconnect":
                return
            if event["type"] != "websocket.receive":
                continue
            try:
                text = event.get("text")
                if text is not None:
                    msg = phoenix.decode_text(self.vsn, text)
                else:
                    data = event.get("bytes") or b""
                    msg = phoenix.decode_binary(data) if self.vsn == "v2" else phoenix.decode_text("v1", data)
            except phoenix.FrameError as exc:
                logger.info("ignoring a malformed realtime frame: %s", exc)
                continue
            await self._handle(msg)

    # -- protocol ----------------------------------------------------------------------------------------------
    async def _handle(self, msg: Inbound) -> None:
        if msg.topic == phoenix.PHOENIX_TOPIC:
            if msg.event == "heartbeat":
                self._send(phoenix.reply(self.vsn, msg, "ok", {}))
            return
        event = msg.event
        if event == "phx_join":
            await self._join(msg)
        elif event == "broadcast":
            await self._broadcast(msg)
        elif event == "phx_leave":
            self._leave(msg)
        elif event == "access_token":
            await self._access_token(msg)
        elif event == "presence":
            if msg.ref is not None:
                self._send(phoenix.reply(self.vsn, msg, "ok", {}))  # accepted, not tracked by this hub
        elif msg.topic not in self.channels and msg.ref is not None:
            self._send(phoenix.error_reply(self.vsn, msg, "unmatched topic"))

    async def _join(self, msg: Inbound) -> None:
        if not msg.topic.startswith(TOPIC_PREFIX):
            self._send(phoenix.error_reply(self.vsn, msg, "unmatched topic"))
            return
        subtopic = msg.topic.removeprefix(TOPIC_PREFIX)
        payload = msg.payload if isinstance(msg.payload, dict) else {}
        config = payload.get("config")
        config = config if isinstance(config, dict) else {}
        broadcast = config.get("broadcast")
        broadcast = broadcast if isinstance(broadcast, dict) else {}
        token = payload.get("access_token")
        token = token if isinstance(token, str) and token else self.apikey

        previous = self.channels.pop(msg.topic, None)
        if previous is not None:  # a duplicate join replaces the earlier one, as Phoenix does
            self.hub.detach(previous.subtopic, previous)
            self._send(phoenix.encode(self.vsn, previous.join_ref, previous.join_ref, msg.topic, "phx_close", {}))
        if len(self.channels) >= self.max_channels:
            self._send(phoenix.error_reply(self.vsn, msg, "ChannelRateLimitReached: Too many channels"))
            return
        reason = await self._authorize(token, subtopic, None)
        if reason is not None:
            self._send(phoenix.error_reply(self.vsn, msg, reason))
            return
        join_ref = msg.join_ref if msg.join_ref is not None else msg.ref
        member = ChannelMember(
            self,
            msg.topic,
            join_ref,
            token,
            ack=bool(broadcast.get("ack")),
            self_=bool(broadcast.get("self")),
        )
        self.channels[msg.topic] = member
        self.hub.attach(subtopic, member)
        self._send(phoenix.reply(self.vsn, msg, "ok", {"postgres_changes": []}))

    async def _authorize(self, token: str | None, subtopic: str, event: str | None) -> str | None:
        """None when allowed, else the `"<Code>: <message>"` reason Supabase would give."""
        try:
            if event is None:
                await self.authorizer.check_join(token, subtopic)
            else:
                await self.authorizer.check_send(token, subtopic, event)
        except Unauthorized as exc:
            return f"InvalidJWTToken: {exc.detail}"
        except Forbidden:
            verb = "read from" if event is None else "write to"
            return f"Unauthorized: You do not have permissions to {verb} this Channel topic: {subtopic}"
        except BridgeError as exc:
            return f"UnableToSetPolicies: {exc.detail}"
        except Exception:
            logger.exception("realtime authorizer failed")
            return "UnableToSetPolicies: authorization is unavailable, try again"
        return None

    async def _broadcast(self, msg: Inbound) -> None:
        member = self.channels.get(msg.topic)
        if member is None:
            if msg.ref is not None:
                self._send(phoenix.error_reply(self.vsn, msg, "unmatched topic"))
            return
        payload = msg.payload if isinstance(msg.payload, dict) else {}
        user_event = payload.get("event")
        if not isinstance(user_event, str) or not user_event:
            if member.ack and msg.ref is not None:
                self._send(phoenix.error_reply(self.vsn, msg, "MalformedMessage: broadcast needs an event"))
            return
        reason = await self._authorize(member.token, member.subtopic, user_event)
        if reason is not None:
            logger.info("refused a client broadcast of %r on %s", user_event, member.subtopic)
            if member.ack and msg.ref is not None:
                self._send(phoenix.error_reply(self.vsn, msg, reason))
            return
        if msg.binary is not None:
            message = Message(
                member.subtopic,
                user_event,
                payload.get("payload") if msg.binary.encoding == ENCODING_JSON else None,
                data=msg.binary.data,
                binary=True,
                encoding=msg.binary.encoding,
                meta=msg.binary.meta,
            )
        else:
            message = Message(member.subtopic, user_event, payload.get("payload"))
        self.hub.deliver(message, exclude=None if member.receive_self else member)
        if member.ack and msg.ref is not None:
            self._send(phoenix.reply(self.vsn, msg, "ok", {}))

    def _leave(self, msg: Inbound) -> None:
        member = self.channels.pop(msg.topic, None)
        self._send(phoenix.reply(self.vsn, msg, "ok", {}))
        if member is not None:
            self.hub.detach(member.subtopic, member)
            join_ref = member.join_ref
        else:
            join_ref = msg.join_ref
        self._send(phoenix.encode(self.vsn, join_ref, join_ref, msg.topic, "phx_close", {}))

    async def _access_token(self, msg: Inbound) -> None:
        member = self.channels.get(msg.topic)
        if member is None:
            return
        payload = msg.payload if isinstance(msg.payload, dict) else {}
        token = payload.get("access_token")
        token = token if isinstance(token, str) and token else self.apikey
        reason = await self._authorize(token, member.subtopic, None)
        if reason is None:
            member.token = token
            return
        system: dict[str, Any] = {
            "channel": member.subtopic,
            "extension": "system",
            "message": reason,
            "status": "error",
        }
        self._send(phoenix.encode(self.vsn, member.join_ref, None, msg.topic, "system", system))
        self.channels.pop(msg.topic, None)
        self.hub.detach(member.subtopic, member)
        self._send(phoenix.encode(self.vsn, member.join_ref, member.join_ref, msg.topic, "phx_close", {}))
