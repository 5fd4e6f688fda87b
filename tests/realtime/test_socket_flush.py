"""The shared flusher of realtime sockets: sends finish in place, a send that suspends goes to that socket alone."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from bridge.realtime.socket import ChannelMember, Connection
from shared.broadcast.local import LocalHub


class FakeSocket:
    """An ASGI-level stand-in: `send` waits at `gate` when one is set, as uvicorn's does while paused for writing."""

    def __init__(self, gate: asyncio.Event | None = None, fail: bool = False) -> None:
        self.gate = gate
        self.fail = fail
        self.texts: list[int] = []

    async def send(self, message: dict[str, Any]) -> None:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ConnectionResetError("client went away")
        if message["type"] == "websocket.send":
            self.texts.append(json.loads(message["text"])["payload"]["payload"]["i"])

    async def receive(self) -> dict[str, Any]:
        await asyncio.Event().wait()  # a client that never sends
        raise AssertionError


def connect(hub: LocalHub, ws: FakeSocket) -> asyncio.Task[None]:
    conn = Connection(
        cast(Any, ws), hub, cast(Any, None), vsn="v1", apikey=None, idle_timeout_s=60, max_channels=10, max_queue=64
    )
    member = ChannelMember(conn, "realtime:session:a", "1", None, ack=False, self_=False)
    conn.channels[member.topic] = member
    hub.attach("session:a", member)
    return asyncio.create_task(conn.run())


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_suspended_send_holds_up_only_its_socket() -> None:
    """A socket whose send suspends gets its frames in order once it resumes; the others get theirs meanwhile."""
    hub = LocalHub()
    gate = asyncio.Event()
    slow, fast = FakeSocket(gate), FakeSocket()
    tasks = [connect(hub, slow), connect(hub, fast)]
    for i in range(3):
        hub.broadcast("session:a", "entry", {"i": i})
    await settle()
    assert (fast.texts, slow.texts) == ([0, 1, 2], [])
    gate.set()
    await settle()
    assert slow.texts == [0, 1, 2]
    slow.gate = None
    hub.broadcast("session:a", "entry", {"i": 3})
    await settle()
    assert (fast.texts, slow.texts) == ([0, 1, 2, 3], [0, 1, 2, 3])
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_failed_send_ends_the_connection() -> None:
    """A send that raises (the client is gone) ends that connection and detaches it from its topics."""
    hub = LocalHub()
    task = connect(hub, FakeSocket(fail=True))
    hub.broadcast("session:a", "entry", {"i": 0})
    await asyncio.wait_for(task, 1)
    assert hub.subscriber_count("session:a") == 0
