"""The in-process realtime hub: pub/sub keyed by topic, with Supabase-Realtime wire frames encoded once per message.

Topics carry no `realtime:` prefix (`session:abc`); the frames sent to WebSocket clients do, as Supabase's do.
Every subscriber is a `Sink` with a wire format. A message is encoded at most once per wire format present on its
topic, and the very same `str`/`bytes` object is offered to every sink of that format. A sink that cannot take
more (its bounded queue is full) is detached and told to go away, so one slow reader never holds up the others.

The hub is thread-safe: `publish`/`broadcast` may be called from any thread or event loop (tests publish from
their own loop into a uvicorn running in a thread); sinks wake their consumer on the consumer's own loop.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
from collections.abc import AsyncIterator
from typing import Any, Final, Literal, Protocol

import msgspec

logger = logging.getLogger(__name__)

Wire = Literal["v1", "v2", "object"]
"""`v1`: Phoenix vsn 1.0.0 JSON object text; `v2`: vsn 2.0.0 (JSON array text, or a binary kind-4 frame when the
sender pushed binary); `object`: an `(event, payload)` tuple for in-process subscribers."""

Frame = str | bytes | tuple[str, Any]
EvictReason = Literal["slow", "shutdown"]

TOPIC_PREFIX: Final = "realtime:"
KIND_USER_BROADCAST: Final = 4
ENCODING_BINARY: Final = 0
ENCODING_JSON: Final = 1

_encode = msgspec.json.Encoder().encode


class Sink(Protocol):
    """One subscriber of one topic, as the hub sees it."""

    wire: Wire

    def offer(self, frame: Frame) -> bool:
        """Queue a frame without blocking; False when the subscriber's queue is full."""

    def evict(self, reason: EvictReason) -> None:
        """Called once the hub has detached this sink (`slow`: its queue was full; `shutdown`): close it."""


class Message:
    """One broadcast with its wire encodings, each made on first use and then shared by every sink."""

    __slots__ = ("_frames", "binary", "data", "encoding", "event", "meta", "payload", "topic")

    def __init__(
        self,
        topic: str,
        event: str,
        payload: Any = None,
        *,
        data: bytes | None = None,
        binary: bool = False,
        encoding: int = ENCODING_JSON,
        meta: bytes = b"",
    ) -> None:
        self.topic = topic
        self.event = event
        self.payload = payload
        # `data`: the payload bytes as they go on the wire (JSON text, or raw bytes when encoding is binary).
        self.data = data if data is not None else _encode(payload)
        self.binary = binary
        self.encoding = encoding
        self.meta = meta
        self._frames: dict[Wire, Frame | None] = {}

    def frame(self, wire: Wire) -> Frame | None:
        """The frame for one wire format, or None when that format cannot carry this message."""
        try:
            return self._frames[wire]
        except KeyError:
            frame = self._frames[wire] = self._build(wire)
            return frame

    def _inner(self) -> bytes:
        return b'{"type":"broadcast","event":' + _encode(self.event) + b',"payload":' + self.data + b"}"

    def _build(self, wire: Wire) -> Frame | None:
        json_payload = self.encoding == ENCODING_JSON
        if wire == "object":
            if not json_payload:
                return None
            payload = self.payload if self.payload is not None else msgspec.json.decode(self.data)
            return (self.event, payload)
        full_topic = (TOPIC_PREFIX + self.topic).encode()
        if wire == "v2" and self.binary:
            event = self.event.encode()
            if max(len(full_topic), len(event), len(self.meta)) <= 255:
                header = bytes((KIND_USER_BROADCAST, len(full_topic), len(event), len(self.meta), self.encoding))
                return header + full_topic + event + self.meta + self.data
        if not json_payload:
            return None  # raw bytes only travel in binary frames
        topic_json = _encode(TOPIC_PREFIX + self.topic)
        if wire == "v1":
            text = b'{"topic":' + topic_json + b',"event":"broadcast","payload":' + self._inner() + b',"ref":null}'
        else:
            text = b"[null,null," + topic_json + b',"broadcast",' + self._inner() + b"]"
        return text.decode()


class Subscription:
    """An in-process subscription: `async for event, payload in sub`; ends when closed or dropped for lagging."""

    wire: Wire = "object"

    def __init__(self, hub: LocalHub, topic: str, max_queue: int) -> None:
        self.topic = topic
        self.dropped = False
        self._hub = hub
        self._max = max_queue
        self._items: collections.deque[tuple[str, Any]] = collections.deque()
        self._closed = False
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()

    def offer(self, frame: Frame) -> bool:
        if self._closed:
            return True
        if len(self._items) >= self._max:
            return False
        assert isinstance(frame, tuple)
        self._items.append(frame)
        self._wake()
        return True

    def evict(self, reason: EvictReason) -> None:
        if reason == "slow":
            logger.warning("in-process subscriber of %s fell behind and was dropped", self.topic)
            self.dropped = True
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._ready.set()
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._ready.set)

    async def get(self, within_s: float | None = None) -> tuple[str, Any]:
        """The next (event, payload); raises TimeoutError after `within_s` s, StopAsyncIteration once closed."""
        async with asyncio.timeout(within_s):
            while not self._items:
                if self._closed:
                    raise StopAsyncIteration
                self._ready.clear()
                await self._ready.wait()
        return self._items.popleft()

    def __aiter__(self) -> AsyncIterator[tuple[str, Any]]:
        return self

    async def __anext__(self) -> tuple[str, Any]:
        return await self.get()

    def close(self) -> None:
        """Stop receiving; pending items are discarded and iteration ends."""
        if not self._closed:
            self._closed = True
            self._items.clear()
            self._hub.detach(self.topic, self)
            self._wake()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalHub:
    """In-process broadcaster and the state behind the bridge's Supabase-compatible realtime endpoints."""

    name = "local"

    def __init__(self) -> None:
        self._topics: dict[str, dict[Sink, None]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self.metrics: dict[str, int] = {"published": 0, "delivered": 0, "dropped_subscribers": 0}

    async def start(self) -> None:
        self._closed = False

    async def publish(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        """Deliver to every subscriber of `topic` now; never raises for a delivery problem."""
        try:
            self.broadcast(topic, event, payload)
        except Exception:  # the Broadcaster contract: a broadcast never fails the caller
            logger.exception("local broadcast on %s failed", topic)

    def broadcast(self, topic: str, event: str, payload: Any, *, exclude: Sink | None = None) -> int:
        """Fan a JSON broadcast out to the topic's sinks (except `exclude`); returns how many took it."""
        return self.deliver(Message(topic, event, payload), exclude=exclude)

    def deliver(self, message: Message, *, exclude: Sink | None = None) -> int:
        """Offer one prepared message to every sink of its topic; sinks that are full get detached."""
        with self._lock:
            members = self._topics.get(message.topic)
            sinks = list(members) if members else []
        self.metrics["published"] += 1
        delivered = 0
        lagging: list[Sink] = []
        for sink in sinks:
            if sink is exclude:
                continue
            frame = message.frame(sink.wire)
            if frame is None:
                continue
            if sink.offer(frame):
                delivered += 1
            else:
                lagging.append(sink)
        for sink in lagging:
            self.detach(message.topic, sink)
            self.metrics["dropped_subscribers"] += 1
            sink.evict("slow")
        self.metrics["delivered"] += delivered
        return delivered

    def attach(self, topic: str, sink: Sink) -> None:
        with self._lock:
            self._topics.setdefault(topic, {})[sink] = None

    def detach(self, topic: str, sink: Sink) -> None:
        with self._lock:
            members = self._topics.get(topic)
            if members is not None:
                members.pop(sink, None)
                if not members:
                    del self._topics[topic]

    def subscribe(self, topic: str, *, max_queue: int = 10_000) -> Subscription:
        """An in-process subscription to `topic` (no `realtime:` prefix); call from inside an event loop."""
        sub = Subscription(self, topic, max_queue)
        self.attach(topic, sub)
        return sub

    def subscriber_count(self, topic: str) -> int:
        with self._lock:
            return len(self._topics.get(topic, ()))

    async def close(self) -> None:
        """Tell every subscriber to go away; the hub can be started again."""
        with self._lock:
            sinks = {sink for members in self._topics.values() for sink in members}
            self._topics.clear()
        for sink in sinks:
            sink.evict("shutdown")
        self._closed = True
