"""A streaming client: a file sent through `/functions/v1/stream` as 16 kHz PCM frames at real-time pace.

It is the `interview-bridge stream` command (a smoke test for users, and a latency probe) and the tests' client.
A dropped connection (a server restart, a network blip) is reconnected with growing waits; the server's `ready`
says where to go on (`next_sequence`), so nothing acknowledged is sent twice and nothing is skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from shared.audio.decode import decode_chunk
from shared.audio.formats import inspect_chunk
from shared.stt.wavio import pcm16_bytes

RATE = 16_000
MAX_RECONNECTS = 20
RETRIED_CLOSES = frozenset({4429, 4503})  # the rate limit, a store outage: the same frames go again later


class StreamRefused(Exception):
    """The server closed with an error (44xx): retrying would not help."""

    def __init__(self, code: int, error: dict[str, Any]) -> None:
        super().__init__(f"{code} {error.get('error')}: {error.get('detail')}")
        self.code = code
        self.error = error


@dataclass
class StreamRun:
    """What one streamed file gave: entries, acks, and how often the connection was made again."""

    entries: list[dict[str, Any]] = field(default_factory=list)
    acked: list[int] = field(default_factory=list)
    throttled: int = 0
    reconnects: int = 0
    partials: int = 0
    first_sequence: int | None = None  # the speaker's next_sequence when this file began
    line_delays: list[float] = field(default_factory=list)  # end of an entry's audio -> its arrival, seconds

    @property
    def text(self) -> str:
        return " ".join(entry["text"] for entry in sorted(self.entries, key=lambda e: e["start_ms"]))


def pcm_frames(path: Path, frame_ms: int) -> list[bytes]:
    """The file as s16le mono 16 kHz frames of `frame_ms`."""
    data = path.read_bytes()
    ints = pcm16_bytes(decode_chunk(data, inspect_chunk(data, None)))
    step = RATE * frame_ms // 1000 * 2
    return [ints[i : i + step] for i in range(0, len(ints), step)]


def socket_url(base: str, session_id: str, speaker: str, token: str, mime_type: str) -> str:
    query = urlencode({"session_id": session_id, "speaker": speaker, "mime_type": mime_type, "token": token})
    return (
        base.rstrip("/").replace("http://", "ws://", 1).replace("https://", "wss://", 1)
        + f"/functions/v1/stream?{query}"
    )


async def stream_frames(
    url: str,
    frames: list[bytes],
    *,
    frame_s: float,
    pace: float | None = 1.0,
    on_message: Callable[[dict[str, Any]], None] = lambda _: None,
) -> StreamRun:
    """Send `frames` (each `frame_s` long) to the socket at `url`, `pace` times real time (None: as fast as acks
    allow), then end the stream; reconnect and resume on a dropped connection, a rate limit or an outage."""
    run = StreamRun()
    started = time.monotonic()
    delay = 0.2
    while True:
        try:
            async with connect(url, max_size=2**22, open_timeout=10) as socket:
                done = await _one_connection(socket, frames, frame_s, pace, started, run, on_message)
                if done:
                    return run
        except StreamRefused as refused:
            if refused.code not in RETRIED_CLOSES:
                raise
            wait = float(refused.error.get("retry_after") or 1)  # a limit or an outage: later, not never
        except (OSError, ConnectionClosed, InvalidHandshake, TimeoutError):
            wait = delay
            delay = min(delay * 2, 3.0)
        run.reconnects += 1
        if run.reconnects > MAX_RECONNECTS:
            raise ConnectionError(f"the stream dropped {MAX_RECONNECTS} times; giving up")
        await asyncio.sleep(wait)


async def _one_connection(
    socket: ClientConnection,
    frames: list[bytes],
    frame_s: float,
    pace: float | None,
    started: float,
    run: StreamRun,
    on_message: Callable[[dict[str, Any]], None],
) -> bool:
    ready = json.loads(await socket.recv())
    if ready.get("type") != "ready":  # an error message, then the close that says its code
        with contextlib.suppress(TimeoutError, ConnectionClosed):
            await asyncio.wait_for(socket.wait_closed(), 5)
        raise StreamRefused(socket.close_code or 4400, ready)
    if run.first_sequence is None:  # the speaker may have sent audio before this file: frame 0 goes there
        run.first_sequence = int(ready["next_sequence"])
    position = int(ready["next_sequence"]) - run.first_sequence
    acks = asyncio.Queue[int]()
    reader = asyncio.create_task(_read(socket, run, acks, started, on_message))
    try:
        in_flight = 0
        for index in range(position, len(frames)):
            if pace is not None:
                due = started + index * frame_s / pace
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            await socket.send(frames[index])
            in_flight += 1
            while in_flight > 8:  # a few frames on the wire, no more: the server's acks set the pace
                await _next_ack(acks, reader)
                in_flight -= 1
        while in_flight:
            await _next_ack(acks, reader)
            in_flight -= 1
        await socket.send(json.dumps({"type": "end"}))
        await reader
        return True
    finally:
        reader.cancel()


async def _next_ack(acks: asyncio.Queue[int], reader: asyncio.Task[None]) -> None:
    getter = asyncio.ensure_future(acks.get())
    finished, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
    if getter not in finished:
        getter.cancel()
        reader.result()  # the reader's error (a refusal, a dropped connection)
        raise ConnectionError("the connection closed before every frame was acknowledged")


async def _read(
    socket: ClientConnection,
    run: StreamRun,
    acks: asyncio.Queue[int],
    started: float,
    on_message: Callable[[dict[str, Any]], None],
) -> None:
    error: dict[str, Any] = {}
    try:
        async for raw in socket:
            message = json.loads(raw)
            on_message(message)
            kind = message.get("type")
            if kind == "ack":
                run.acked.append(message["sequence_number"])
                run.throttled += bool(message.get("throttled"))
                acks.put_nowait(message["sequence_number"])
            elif kind == "entry":
                run.entries.append(message["entry"])
                run.line_delays.append(time.monotonic() - started - message["entry"]["end_ms"] / 1000)
            elif kind == "partial":
                run.partials += 1
            elif kind == "error":
                error = message
    except ConnectionClosed:
        pass
    code = socket.close_code or 1006
    if 4000 <= code < 5000:
        raise StreamRefused(code, error)
    if code != 1000:
        raise ConnectionError(f"the connection closed with {code}")
