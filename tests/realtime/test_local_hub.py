"""LocalHub on its own: fan-out, encode-once, slow-sink eviction, in-process subscriptions, thread safety."""

from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

from bridge.realtime.redact import RedactSecretsFilter, redact_query
from shared.broadcast.base import Broadcaster
from shared.broadcast.local import EvictReason, Frame, LocalHub, Message, Wire


class RecordingSink:
    def __init__(self, wire: Wire, capacity: int = 100) -> None:
        self.wire: Wire = wire
        self.capacity = capacity
        self.frames: list[Frame] = []
        self.evicted: EvictReason | None = None

    def offer(self, frame: Frame) -> bool:
        if len(self.frames) >= self.capacity:
            return False
        self.frames.append(frame)
        return True

    def evict(self, reason: EvictReason) -> None:
        self.evicted = reason


def test_local_hub_is_a_broadcaster() -> None:
    """LocalHub satisfies the Broadcaster protocol and is named "local"."""
    hub: Broadcaster = LocalHub()
    assert hub.name == "local"


def test_each_format_is_encoded_once_and_shared() -> None:
    """Every sink of one wire format receives the very same frame object: one encoding per topic per format."""
    hub = LocalHub()
    sinks = [RecordingSink("v1") for _ in range(3)] + [RecordingSink("v2") for _ in range(3)]
    for sink in sinks:
        hub.attach("session:a", sink)
    assert hub.broadcast("session:a", "transcript_entry", {"text": "hi"}) == 6
    v1 = {id(sink.frames[0]) for sink in sinks if sink.wire == "v1"}
    v2 = {id(sink.frames[0]) for sink in sinks if sink.wire == "v2"}
    assert len(v1) == 1 and len(v2) == 1
    assert json.loads(sinks[0].frames[0])["ref"] is None  # type: ignore[arg-type]
    assert json.loads(sinks[3].frames[0]) == [  # type: ignore[arg-type]
        None,
        None,
        "realtime:session:a",
        "broadcast",
        {"type": "broadcast", "event": "transcript_entry", "payload": {"text": "hi"}},
    ]


def test_full_sink_is_evicted_and_others_still_served() -> None:
    """A sink whose queue is full is detached and evicted as slow; the others keep receiving."""
    hub = LocalHub()
    slow, fast = RecordingSink("v1", capacity=1), RecordingSink("v1", capacity=10)
    hub.attach("t", slow)
    hub.attach("t", fast)
    for i in range(3):
        hub.broadcast("t", "e", {"i": i})
    assert slow.evicted == "slow" and len(slow.frames) == 1
    assert len(fast.frames) == 3
    assert hub.subscriber_count("t") == 1
    assert hub.metrics["dropped_subscribers"] == 1


def test_binary_message_frames() -> None:
    """A binary push becomes a kind-4 frame for v2; a JSON-encoded one is also readable by v1 and in-process."""
    message = Message("session:a", "cursor", data=b'{"x":1}', binary=True, meta=b"")
    assert message.frame("v2") == b"\x04\x12\x06\x00\x01realtime:session:acursor" + b'{"x":1}'
    assert json.loads(message.frame("v1"))["payload"]["payload"] == {"x": 1}  # type: ignore[arg-type]
    assert message.frame("object") == ("cursor", {"x": 1})
    raw = Message("session:a", "blob", data=b"\x00\x01", binary=True, encoding=0)
    assert raw.frame("v1") is None and raw.frame("object") is None
    assert raw.frame("v2") == b"\x04\x12\x04\x00\x00realtime:session:ablob\x00\x01"


async def test_subscription_iterates_and_closes() -> None:
    """subscribe() yields (event, payload) in order; close() detaches it and ends the iteration."""
    hub = LocalHub()
    sub = hub.subscribe("session:a")
    await hub.publish("session:a", "a", {"n": 1})
    await hub.publish("session:b", "ignored", {})
    await hub.publish("session:a", "b", {"n": 2})
    got: list[tuple[str, Any]] = []
    async for item in sub:
        got.append(item)
        if len(got) == 2:
            sub.close()
    assert got == [("a", {"n": 1}), ("b", {"n": 2})]
    assert hub.subscriber_count("session:a") == 0


async def test_lagging_subscription_is_dropped() -> None:
    """An in-process subscription past its queue bound is dropped and ends, without blocking publish."""
    hub = LocalHub()
    sub = hub.subscribe("t", max_queue=2)
    for i in range(5):
        await hub.publish("t", "e", {"i": i})
    assert sub.dropped
    assert [item async for item in sub] == [("e", {"i": 0}), ("e", {"i": 1})] or sub.dropped


async def test_publish_from_another_thread_wakes_the_subscriber() -> None:
    """publish() from another thread (and its own event loop) reaches a subscriber waiting on this loop."""
    hub = LocalHub()
    sub = hub.subscribe("t")

    def other_thread() -> None:
        asyncio.run(hub.publish("t", "e", {"from": "thread"}))

    thread = threading.Thread(target=other_thread)
    thread.start()
    assert await sub.get(within_s=2) == ("e", {"from": "thread"})
    thread.join()


async def test_publish_never_raises() -> None:
    """publish() swallows (and logs) a delivery failure: a broadcast never fails the caller."""

    class Broken(RecordingSink):
        def offer(self, frame: Frame) -> bool:
            raise RuntimeError("boom")

    hub = LocalHub()
    hub.attach("t", Broken("v1"))
    await hub.publish("t", "e", {})


async def test_close_evicts_every_sink() -> None:
    """close() tells every subscriber to go away (shutdown) and ends in-process subscriptions."""
    hub = LocalHub()
    sink = RecordingSink("v2")
    hub.attach("t", sink)
    sub = hub.subscribe("u")
    await hub.close()
    assert sink.evicted == "shutdown"
    assert [item async for item in sub] == []
    assert not sub.dropped


def test_apikey_is_redacted() -> None:
    """The socket's key never reaches a log: query strings and log messages are redacted."""
    assert redact_query("apikey=secret-key&vsn=1.0.0") == "apikey=REDACTED&vsn=1.0.0"
    import logging

    record = logging.LogRecord(
        "uvicorn.error",
        20,
        "",
        0,
        '%s - "WebSocket %s" [accepted]',
        ("1.2.3.4", "/realtime/v1/websocket?apikey=abc.def&vsn=2.0.0"),
        None,
    )
    RedactSecretsFilter().filter(record)
    assert "abc.def" not in record.getMessage() and "apikey=REDACTED" in record.getMessage()
