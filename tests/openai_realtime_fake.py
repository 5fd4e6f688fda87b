"""A local stand-in for OpenAI's Realtime API, transcription sessions only (GA event shapes).

`FakeRealtime` serves `ws://127.0.0.1:PORT/v1/realtime?intent=transcription` so the official SDK can talk to it:

    async with FakeRealtime(transcribe) as fake:
        client = openai.AsyncOpenAI(api_key="sk-test", base_url=fake.base_url)
        async with client.realtime.connect(extra_query={"intent": "transcription"}) as conn:
            ...

What it does, in audio time (ms = 24 kHz samples // 24 since the socket opened):

- the handshake is refused with an OpenAI-style JSON error for a wrong path (404), a wrong or missing bearer key
  (401), a missing `intent=transcription` (400), or a fault queued with `refuse_next`;
- `session.update` is checked (transcription type, `audio/pcm` at 24 kHz) and stored; `session.updated` answers it;
- with `server_vad` an energy VAD over 20 ms frames opens an item on the first frame louder than `voice_dbfs` and
  closes it `silence_duration_ms` after the last loud frame (speech_started / speech_stopped / committed);
- `input_audio_buffer.commit` / `.clear` act on the audio since the last committed item;
- each committed item is resampled to 16 kHz float32, handed to the `transcribe` callable in a thread, and answered
  with one delta per word and a `completed` event, in commit order, while the socket keeps reading audio.

Faults (`refuse_next`, `drop_after`, `rate_limit_after`, `fail_next_item`) apply to what comes next and are then
used up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import numpy.typing as npt
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

__all__ = ["FakeConnection", "FakeRealtime", "Transcribe"]

Transcribe = Callable[[npt.NDArray[np.float32]], str]
"""16 kHz mono float32 in [-1, 1] -> text."""

_RATE = 24_000
_PER_MS = _RATE // 1000  # samples per millisecond
_FRAME = 20 * _PER_MS  # one VAD frame, 20 ms
_MIN_COMMIT_MS = 100
_PATH = "/v1/realtime"
_DEFAULT_PREFIX_MS = 300
_DEFAULT_SILENCE_MS = 500


def _default_turn_detection() -> dict[str, Any]:
    return {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": _DEFAULT_PREFIX_MS,
        "silence_duration_ms": _DEFAULT_SILENCE_MS,
    }


def _new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _error_detail(
    kind: str, code: str | None, message: str, *, param: str | None = None, event_id: str | None = None
) -> dict[str, Any]:
    return {"type": kind, "code": code, "message": message, "param": param, "event_id": event_id}


def _http_error(status: int) -> dict[str, Any]:
    """The JSON body OpenAI sends with a refused request of this status."""
    if status == 401:
        detail: dict[str, Any] = {
            "message": "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error",
            "code": "invalid_api_key",
        }
    elif status == 429:
        detail = {
            "message": "Rate limit reached for requests. Please try again later.",
            "type": "requests",
            "code": "rate_limit_exceeded",
        }
    elif status >= 500:
        detail = {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "code": "server_error",
        }
    elif status == 404:
        detail = {"message": "Invalid URL", "type": "invalid_request_error", "code": "not_found"}
    else:
        detail = {"message": HTTPStatus(status).phrase, "type": "invalid_request_error", "code": None}
    return {"error": {**detail, "param": None}}


def _dbfs(frame: npt.NDArray[np.int16]) -> float:
    """RMS level of 16-bit samples relative to full scale (a full-scale square wave is 0 dBFS)."""
    if frame.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(frame.astype(np.float64)))))
    if rms <= 0.0:
        return -math.inf
    return 20.0 * math.log10(rms / 32768.0)


def _to_16k(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float32]:
    """24 kHz int16 -> 16 kHz float32 by linear interpolation."""
    source = samples.astype(np.float32) / np.float32(32768.0)
    count = source.size * 2 // 3
    if count == 0:
        return np.zeros(0, dtype=np.float32)
    positions = np.arange(count, dtype=np.float64) * 1.5
    resampled: npt.NDArray[np.float64] = np.interp(positions, np.arange(source.size, dtype=np.float64), source)
    return resampled.astype(np.float32)


def _as_dict(value: object) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


@dataclass
class FakeConnection:
    """What one accepted socket did, for tests to inspect."""

    query: dict[str, str]
    authorization: str | None
    session: dict[str, Any]
    audio_ms: int = 0
    transcripts: list[str] = field(default_factory=list)
    closed_by_server: bool = False


@dataclass
class _Item:
    """An item the VAD opened and has not yet closed."""

    item_id: str
    start: int  # first sample of the item's audio (absolute)
    last_voiced_end: int  # end of the last loud frame (absolute sample)


@dataclass
class _Job:
    item_id: str
    samples: npt.NDArray[np.int16]


class _Socket:
    """The protocol on one accepted socket."""

    def __init__(
        self,
        owner: FakeRealtime,
        ws: ServerConnection,
        conn: FakeConnection,
        *,
        drop_after: int | None,
        rate_limit_after: int | None,
    ) -> None:
        self._owner = owner
        self._ws = ws
        self._conn = conn
        self._drop_after = drop_after
        self._rate_limit_after = rate_limit_after
        self._session_id = _new_id("sess")
        self._turn_detection: dict[str, Any] | None = _default_turn_detection()
        self._updated = False
        # Audio: `_buffer` holds samples [_floor, _total); everything before `_floor` is committed or cleared.
        self._buffer = bytearray()
        self._floor = 0
        self._total = 0
        self._vad_pos = 0  # the VAD has looked at every whole frame before this sample
        self._item: _Item | None = None
        self._last_item_id: str | None = None
        self._jobs: asyncio.Queue[_Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    # ---- life cycle

    async def run(self) -> None:
        self._worker = asyncio.create_task(self._work())
        try:
            await self._send({"type": "session.created", "session": self._created_session()})
            async for message in self._ws:
                if not await self._on_message(message):
                    break
        except ConnectionClosed:
            pass
        finally:
            await self.stop_worker()

    def cancel_worker(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    async def stop_worker(self) -> None:
        worker = self._worker
        if worker is None:
            return
        worker.cancel()
        await asyncio.wait([worker])

    async def _close(self, code: int, reason: str) -> None:
        """The fake ends the socket itself (a fault): no more events, then a close frame with `code`."""
        self._conn.closed_by_server = True
        await self.stop_worker()
        await self._ws.close(code, reason)

    # ---- sending

    async def _send(self, event: dict[str, Any]) -> None:
        await self._ws.send(json.dumps({"event_id": _new_id("event"), **event}))

    async def _send_error(
        self, code: str, message: str, *, param: str | None = None, client_event_id: str | None = None
    ) -> None:
        detail = _error_detail("invalid_request_error", code, message, param=param, event_id=client_event_id)
        await self._send({"type": "error", "error": detail})

    def _created_session(self) -> dict[str, Any]:
        return {
            "type": "transcription",
            "id": self._session_id,
            "object": "realtime.transcription_session",
            "expires_at": int(time.time()) + 3600,
            "audio": {
                "input": {
                    "format": {"type": "audio/pcm", "rate": _RATE},
                    "transcription": None,
                    "noise_reduction": None,
                    "turn_detection": _default_turn_detection(),
                }
            },
            "include": None,
        }

    # ---- client events

    async def _on_message(self, message: str | bytes) -> bool:
        """Handle one client event; False once the fake has closed the socket."""
        try:
            event = json.loads(message)
        except (ValueError, UnicodeDecodeError):
            await self._send_error("invalid_json", "The client event is not valid JSON.")
            return True
        if not isinstance(event, dict):
            await self._send_error("invalid_json", "The client event must be a JSON object.")
            return True
        client_event_id = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        kind = event.get("type")
        if kind == "session.update":
            await self._session_update(event, client_event_id)
        elif kind == "input_audio_buffer.append":
            return await self._append(event, client_event_id)
        elif kind == "input_audio_buffer.commit":
            await self._manual_commit(client_event_id)
        elif kind == "input_audio_buffer.clear":
            self._item = None
            self._advance_floor(self._total)
            await self._send({"type": "input_audio_buffer.cleared"})
        else:
            await self._send_error(
                "unknown_event",
                f"Invalid value: '{kind}'. Supported values are: 'session.update', 'input_audio_buffer.append', "
                "'input_audio_buffer.commit' and 'input_audio_buffer.clear'.",
                param="type",
                client_event_id=client_event_id,
            )
        return True

    async def _session_update(self, event: dict[str, Any], client_event_id: str | None) -> None:
        session = _as_dict(event.get("session"))
        if session is None:
            await self._send_error(
                "invalid_value", "Missing session object.", param="session", client_event_id=client_event_id
            )
            return
        if session.get("type") != "transcription":
            await self._send_error(
                "invalid_value",
                f"Invalid value: '{session.get('type')}'. This is a transcription session: use 'transcription'.",
                param="session.type",
                client_event_id=client_event_id,
            )
            return
        audio = _as_dict(session.get("audio")) or {}
        audio_input = _as_dict(audio.get("input")) or {}
        fmt = audio_input.get("format")
        if fmt is not None:
            fmt_dict = _as_dict(fmt)
            if fmt_dict is None or fmt_dict.get("type") != "audio/pcm" or fmt_dict.get("rate", _RATE) != _RATE:
                await self._send_error(
                    "invalid_value",
                    "Invalid input audio format: only {'type': 'audio/pcm', 'rate': 24000} is supported.",
                    param="session.audio.input.format",
                    client_event_id=client_event_id,
                )
                return
        has_turn_detection = "turn_detection" in audio_input
        turn_detection = audio_input.get("turn_detection")
        if turn_detection is not None:
            td = _as_dict(turn_detection)
            if td is None or td.get("type") not in ("server_vad", "semantic_vad"):
                await self._send_error(
                    "invalid_value",
                    "Invalid turn_detection: use {'type': 'server_vad', ...}, {'type': 'semantic_vad', ...} or null.",
                    param="session.audio.input.turn_detection.type",
                    client_event_id=client_event_id,
                )
                return
        self._conn.session = session
        if has_turn_detection:
            self._turn_detection = dict(turn_detection) if isinstance(turn_detection, dict) else None
        answer = {"id": self._session_id, "object": "realtime.transcription_session", **session}
        await self._send({"type": "session.updated", "session": answer})
        if not self._updated:
            self._updated = True
            limits = [{"name": "requests", "limit": 1000, "remaining": 999, "reset_seconds": 60.0}]
            await self._send({"type": "rate_limits.updated", "rate_limits": limits})

    async def _append(self, event: dict[str, Any], client_event_id: str | None) -> bool:
        data = event.get("audio")
        if not isinstance(data, str):
            await self._send_error(
                "invalid_value", "Missing audio: a base64 string.", param="audio", client_event_id=client_event_id
            )
            return True
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            await self._send_error(
                "invalid_value", "Invalid 'audio': not valid base64.", param="audio", client_event_id=client_event_id
            )
            return True
        if len(raw) % 2:
            await self._send_error(
                "invalid_value",
                "Invalid 'audio': 16-bit PCM needs an even number of bytes.",
                param="audio",
                client_event_id=client_event_id,
            )
            return True
        self._buffer += raw
        self._total += len(raw) // 2
        self._conn.audio_ms = self._total // _PER_MS
        if self._drop_after is not None and self._conn.audio_ms >= self._drop_after:
            await self._close(1011, "internal error")
            return False
        if self._rate_limit_after is not None and self._conn.audio_ms >= self._rate_limit_after:
            await self.stop_worker()
            detail = _error_detail(
                "rate_limit_exceeded", "rate_limit_exceeded", "Rate limit reached for audio. Please try again later."
            )
            await self._send({"type": "error", "error": detail})
            await self._close(1008, "rate limit exceeded")
            return False
        await self._run_vad()
        return True

    async def _manual_commit(self, client_event_id: str | None) -> None:
        start, end = self._floor, self._total
        if end - start < _MIN_COMMIT_MS * _PER_MS:
            have = (end - start) / _PER_MS
            await self._send_error(
                "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio, "
                f"but buffer only has {have:.2f}ms of audio.",
                client_event_id=client_event_id,
            )
            return
        item_id = self._item.item_id if self._item is not None else _new_id("item")
        await self._commit(item_id, start, end)

    # ---- audio, VAD, items

    def _advance_floor(self, sample: int) -> None:
        """Forget audio before `sample` (it was committed or cleared)."""
        if sample <= self._floor:
            return
        del self._buffer[: (sample - self._floor) * 2]
        self._floor = sample

    def _samples(self, start: int, end: int) -> npt.NDArray[np.int16]:
        start = max(start, self._floor)
        end = min(end, self._total)
        if end <= start:
            return np.zeros(0, dtype=np.int16)
        chunk = bytes(self._buffer[(start - self._floor) * 2 : (end - self._floor) * 2])
        return np.frombuffer(chunk, dtype="<i2").astype(np.int16)

    def _vad_settings(self) -> tuple[int, int] | None:
        """(prefix_padding_ms, silence_duration_ms) while the server VAD is on."""
        td = self._turn_detection
        if td is None:
            return None
        prefix = td.get("prefix_padding_ms")
        silence = td.get("silence_duration_ms")
        return (
            int(prefix) if isinstance(prefix, int | float) else _DEFAULT_PREFIX_MS,
            int(silence) if isinstance(silence, int | float) else _DEFAULT_SILENCE_MS,
        )

    async def _run_vad(self) -> None:
        while self._vad_pos + _FRAME <= self._total:
            frame_start = self._vad_pos
            frame_end = frame_start + _FRAME
            self._vad_pos = frame_end
            settings = self._vad_settings()
            if settings is None:
                continue
            prefix_ms, silence_ms = settings
            voiced = _dbfs(self._samples(frame_start, frame_end)) > self._owner._voice_dbfs
            item = self._item
            if item is None:
                if voiced:
                    onset_ms = frame_start // _PER_MS
                    start_ms = max(self._floor // _PER_MS, onset_ms - prefix_ms)
                    item = _Item(_new_id("item"), max(self._floor, start_ms * _PER_MS), frame_end)
                    self._item = item
                    await self._send(
                        {
                            "type": "input_audio_buffer.speech_started",
                            "audio_start_ms": start_ms,
                            "item_id": item.item_id,
                        }
                    )
            elif voiced:
                item.last_voiced_end = frame_end
            elif frame_end - item.last_voiced_end >= silence_ms * _PER_MS:
                end_ms = item.last_voiced_end // _PER_MS + silence_ms
                await self._send(
                    {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": end_ms, "item_id": item.item_id}
                )
                await self._commit(item.item_id, item.start, end_ms * _PER_MS)

    async def _commit(self, item_id: str, start: int, end: int) -> None:
        samples = self._samples(start, end)
        previous = self._last_item_id
        self._last_item_id = item_id
        self._item = None
        self._advance_floor(end)
        await self._send({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        self._jobs.put_nowait(_Job(item_id, samples))

    # ---- transcription

    async def _work(self) -> None:
        try:
            while True:
                job = await self._jobs.get()
                await self._transcribe(job)
        except ConnectionClosed:
            return

    async def _transcribe(self, job: _Job) -> None:
        if self._owner._take_failure():
            await self._send_failed(job.item_id, "Input audio transcription failed.")
            return
        try:
            text = await asyncio.to_thread(self._owner._transcribe, _to_16k(job.samples))
        except Exception as exc:
            await self._send_failed(job.item_id, f"Input audio transcription failed: {exc}")
            return
        words = text.split()
        transcript = " ".join(words)
        for word in words:
            await self._send(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": job.item_id,
                    "content_index": 0,
                    "delta": f"{word} ",
                }
            )
        self._conn.transcripts.append(transcript)
        await self._send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": job.item_id,
                "content_index": 0,
                "transcript": transcript,
                "usage": {"type": "duration", "seconds": round(job.samples.size / _RATE, 3)},
            }
        )

    async def _send_failed(self, item_id: str, message: str) -> None:
        await self._send(
            {
                "type": "conversation.item.input_audio_transcription.failed",
                "item_id": item_id,
                "content_index": 0,
                "error": {"type": "server_error", "code": "transcription_failed", "message": message, "param": None},
            }
        )


class FakeRealtime:
    """A Realtime transcription endpoint on 127.0.0.1 (a free port), as an async context manager."""

    def __init__(self, transcribe: Transcribe, *, api_key: str = "sk-test", voice_dbfs: float = -55.0) -> None:
        self._transcribe = transcribe
        self._api_key = api_key
        self._voice_dbfs = voice_dbfs
        self.connections: list[FakeConnection] = []
        self.refused = 0
        self._refusals: deque[tuple[int, int | None]] = deque()
        self._drop_after: int | None = None
        self._rate_limit_after: int | None = None
        self._fail_items = 0
        self._server: Server | None = None
        self._port: int | None = None
        self._sockets: set[_Socket] = set()

    async def __aenter__(self) -> FakeRealtime:
        self._server = await serve(
            self._handle,
            "127.0.0.1",
            0,
            process_request=self._process_request,
            compression=None,
            max_size=16 * 1024 * 1024,
            close_timeout=2.0,
        )
        self._port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        for socket in list(self._sockets):
            socket.cancel_worker()
        server.close()
        await server.wait_closed()

    @property
    def base_url(self) -> str:
        if self._port is None:
            raise RuntimeError("FakeRealtime is not running: use `async with FakeRealtime(...)`")
        return f"http://127.0.0.1:{self._port}/v1"

    # ---- faults

    def refuse_next(self, status: int, *, retry_after: int | None = None, times: int = 1) -> None:
        """Refuse the next `times` otherwise good handshakes with HTTP `status` (and `Retry-After` when given)."""
        HTTPStatus(status)  # an unknown status fails here, not in the handshake
        if times < 1:
            raise ValueError("times must be at least 1")
        self._refusals.extend([(status, retry_after)] * times)

    def drop_after(self, audio_ms: int) -> None:
        """Close the next connection (code 1011, no event) once it has received `audio_ms` of audio."""
        self._drop_after = audio_ms

    def rate_limit_after(self, audio_ms: int) -> None:
        """On the next connection, after `audio_ms` of audio: a rate_limit_exceeded `error` event, then close 1008."""
        self._rate_limit_after = audio_ms

    def fail_next_item(self) -> None:
        """The next item to be transcribed (any connection) gets `...input_audio_transcription.failed`."""
        self._fail_items += 1

    def _take_failure(self) -> bool:
        if self._fail_items > 0:
            self._fail_items -= 1
            return True
        return False

    # ---- server

    def _reject(
        self, connection: ServerConnection, status: int, *, retry_after: int | None = None, body: object = None
    ) -> Response:
        self.refused += 1
        response = connection.respond(status, json.dumps(_http_error(status) if body is None else body))
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        url = urlsplit(request.path)
        if url.path != _PATH:
            return self._reject(connection, 404)
        if request.headers.get_all("Authorization") != [f"Bearer {self._api_key}"]:
            return self._reject(connection, 401)
        if dict(parse_qsl(url.query)).get("intent") != "transcription":
            detail = {
                "message": "Missing or invalid 'intent': this endpoint only serves intent=transcription.",
                "type": "invalid_request_error",
                "code": "invalid_value",
                "param": "intent",
            }
            return self._reject(connection, 400, body={"error": detail})
        if self._refusals:
            status, retry_after = self._refusals.popleft()
            return self._reject(connection, status, retry_after=retry_after)
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        if request is None:  # pragma: no cover - the handshake always records its request
            return
        authorization = request.headers.get_all("Authorization")
        conn = FakeConnection(
            query=dict(parse_qsl(urlsplit(request.path).query, keep_blank_values=True)),
            authorization=authorization[0] if authorization else None,
            session={},
        )
        self.connections.append(conn)
        socket = _Socket(self, ws, conn, drop_after=self._drop_after, rate_limit_after=self._rate_limit_after)
        self._drop_after = None
        self._rate_limit_after = None
        self._sockets.add(socket)
        try:
            await socket.run()
        finally:
            self._sockets.discard(socket)
