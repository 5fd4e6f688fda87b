"""Test clients: a raw Phoenix client (exact frames) and a realtime-py subscriber that records what it gets."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any

from realtime import AsyncRealtimeClient
from realtime.types import RealtimeSubscribeStates
from websockets.asyncio.client import ClientConnection, connect


class RawClient:
    """Speaks Phoenix frames directly, so tests can assert on the exact bytes the hub sends."""

    def __init__(self, ws: ClientConnection, vsn: str) -> None:
        self.ws = ws
        self.vsn = vsn
        self._ref = 0

    @classmethod
    async def open(cls, ws_url: str, apikey: str | None = "tok-a", vsn: str | None = "1.0.0") -> RawClient:
        query = []
        if apikey is not None:
            query.append(f"apikey={apikey}")
        if vsn is not None:
            query.append(f"vsn={vsn}")
        ws = await connect(f"{ws_url}?{'&'.join(query)}", open_timeout=5)
        return cls(ws, vsn or "1.0.0")

    def ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def send(
        self, topic: str, event: str, payload: Any, ref: str | None = None, join_ref: str | None = None
    ) -> None:
        if self.vsn == "2.0.0":
            await self.ws.send(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            frame = {"topic": topic, "event": event, "payload": payload, "ref": ref}
            if join_ref is not None:
                frame["join_ref"] = join_ref
            await self.ws.send(json.dumps(frame))

    async def recv_raw(self, within_s: float = 5.0) -> str | bytes:
        async with asyncio.timeout(within_s):
            return await self.ws.recv()

    async def recv(self, within_s: float = 5.0) -> Any:
        raw = await self.recv_raw(within_s)
        assert isinstance(raw, str), f"expected a text frame, got {raw!r}"
        return json.loads(raw)

    async def join(
        self, topic: str, token: str | None = None, *, self_: bool = False, ack: bool = False
    ) -> tuple[str, Any]:
        ref = self.ref()
        payload: dict[str, Any] = {
            "config": {
                "broadcast": {"ack": ack, "self": self_},
                "presence": {"key": "", "enabled": False},
                "private": False,
                "postgres_changes": [],
            }
        }
        if token is not None:
            payload["access_token"] = token
        await self.send(f"realtime:{topic}", "phx_join", payload, ref=ref, join_ref=ref)
        return ref, await self.recv()

    async def silent(self, within_s: float = 0.3) -> bool:
        """True when nothing arrives within `within_s`."""
        try:
            frame = await self.recv_raw(within_s)
        except TimeoutError:
            return True
        raise AssertionError(f"unexpected frame {frame!r}")

    async def close(self) -> None:
        await self.ws.close()


@dataclass
class PySubscriber:
    """A realtime-py 2.34 client subscribed to one topic, queueing every broadcast it receives."""

    client: AsyncRealtimeClient
    received: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    states: list[tuple[RealtimeSubscribeStates, str | None]] = field(default_factory=list)

    @classmethod
    async def start(
        cls, realtime_url: str, topic: str, apikey: str = "tok-a", token: str | None = None
    ) -> PySubscriber:
        client = AsyncRealtimeClient(realtime_url, token=apikey, auto_reconnect=False)
        sub = cls(client)
        if token is not None:
            await client.set_auth(token)
        channel = client.channel(topic)
        channel.on_broadcast("*", lambda message: sub.received.put_nowait(dict(message)))
        await channel.subscribe(lambda state, error: sub.states.append((state, str(error) if error else None)))
        return sub

    async def next(self, within_s: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(within_s):
            return await self.received.get()

    async def close(self) -> None:
        await self.client.close()
