"""A minimal Phoenix channels client (vsn 1.0.0 and 2.0.0 text frames) that records every frame it receives."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from websockets.asyncio.client import ClientConnection, connect


@dataclass
class Frame:
    topic: str
    event: str
    payload: Any
    ref: str | None
    raw: str


@dataclass
class PhoenixSocket:
    ws: ClientConnection
    vsn: str
    frames: list[Frame] = field(default_factory=list)
    _ref: int = 0

    @classmethod
    async def open(cls, ws_url: str, apikey: str, vsn: str = "1.0.0") -> PhoenixSocket:
        ws = await connect(f"{ws_url}?apikey={quote(apikey, safe='')}&vsn={vsn}", open_timeout=5)
        return cls(ws, vsn)

    def next_ref(self) -> str:
        self._ref += 1
        return str(self._ref)

    async def send(self, topic: str, event: str, payload: Any, ref: str | None, join_ref: str | None = None) -> None:
        if self.vsn == "2.0.0":
            await self.ws.send(json.dumps([join_ref, ref, topic, event, payload]))
        else:
            frame: dict[str, Any] = {"topic": topic, "event": event, "payload": payload, "ref": ref}
            if join_ref is not None:
                frame["join_ref"] = join_ref
            await self.ws.send(json.dumps(frame))

    async def recv(self, within_s: float = 5.0) -> Frame:
        async with asyncio.timeout(within_s):
            raw = await self.ws.recv()
        assert isinstance(raw, str), f"expected a text frame, got {raw!r}"
        data = json.loads(raw)
        if isinstance(data, list):
            frame = Frame(topic=data[2], event=data[3], payload=data[4], ref=data[1], raw=raw)
        else:
            frame = Frame(
                topic=data["topic"], event=data["event"], payload=data["payload"], ref=data.get("ref"), raw=raw
            )
        self.frames.append(frame)
        return frame

    async def reply_to(self, ref: str, within_s: float = 5.0) -> Frame:
        """The phx_reply to `ref` (frames in between are kept in `frames`)."""
        while True:
            frame = await self.recv(within_s)
            if frame.event == "phx_reply" and frame.ref == ref:
                return frame

    async def join(self, topic: str, access_token: str | None = None) -> Frame:
        """Join `topic` (given without the `realtime:` prefix) and return the reply."""
        ref = self.next_ref()
        payload: dict[str, Any] = {
            "config": {
                "broadcast": {"ack": True, "self": False},
                "presence": {"key": "", "enabled": False},
                "private": False,
                "postgres_changes": [],
            }
        }
        if access_token is not None:
            payload["access_token"] = access_token
        await self.send(f"realtime:{topic}", "phx_join", payload, ref=ref, join_ref=ref)
        return await self.reply_to(ref)

    async def push(self, topic: str, event: str, payload: dict[str, Any]) -> Frame:
        """A client broadcast on `topic` with a ref (so the hub answers errors), returning the reply."""
        ref = self.next_ref()
        body = {"type": "broadcast", "event": event, "payload": payload}
        await self.send(f"realtime:{topic}", "broadcast", body, ref=ref, join_ref=ref)
        return await self.reply_to(ref)

    async def drain(self, within_s: float) -> list[Frame]:
        """Every frame that arrives within `within_s`."""
        got: list[Frame] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while (left := deadline - loop.time()) > 0:
            try:
                got.append(await self.recv(left))
            except TimeoutError:
                break
        return got

    async def close(self) -> None:
        await self.ws.close()
