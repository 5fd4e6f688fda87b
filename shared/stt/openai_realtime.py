"""The `openai-realtime` engine: OpenAI's Realtime transcription, one WebSocket per live speaker (openai SDK).

- A transcription session (`intent=transcription`): 24 kHz PCM goes up, the server's VAD cuts it into items,
  `...input_audio_transcription.delta` events are the speaker's partial and `.completed` the item's final text.
- Audio time is the only clock: the server reports an item's start and end in ms of the audio sent on that
  connection, so a connection remembers where on the speaker's stream it began (`origin_ms`).
- Whatever goes wrong (a refused handshake, an `error` event, a dropped socket, a failed item) ends the
  connection and is kept as its `failure`; the live path opens a new one and sends again the audio that no entry
  covers yet, which the store keeps until then. Nothing is retried inside this module.
- `transcribe()` (one utterance, for late chunks and the CLI) is the same session with the VAD off: append, commit.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import openai
from websockets.exceptions import InvalidStatus, WebSocketException

from shared.errors import EngineUnavailable
from shared.stt.base import SAMPLE_RATE, Pcm, ReadyAtOnce, SettledItem, Transcription
from shared.stt.filters import clean_text, trim_prompt
from shared.stt.openai_engine import DEFAULT_BASE_URL, MIN_DURATION_S, _retry_after_seconds
from shared.stt.wavio import pcm16_bytes

__all__ = ["UPSTREAM_RATE", "RealtimeStream", "RealtimeTranscriber", "session_config", "to_upstream_rate"]

log = logging.getLogger("bridge.stt.realtime")

UPSTREAM_RATE = 24_000  # the only PCM rate a Realtime session takes
SILENCE_MS = 500  # the server VAD's pause that ends an item (the issue's ~0.5 s)
PREFIX_PADDING_MS = 300  # audio the server keeps before detected speech
DETECTION_MARGIN_MS = 1_500  # audio the server's VAD may still place the start of speech in
PROCESSING_LAG_S = 3.0  # audio sent this recently may not have reached the server's VAD yet
COMMIT_EMPTY = "input_audio_buffer_commit_empty"


def to_upstream_rate(pcm: Pcm) -> bytes:
    """16 kHz float PCM as 24 kHz s16le, by linear interpolation (speech has nothing above 8 kHz to lose)."""
    if not len(pcm):
        return b""
    count = round(len(pcm) * UPSTREAM_RATE / SAMPLE_RATE)
    positions = np.linspace(0, len(pcm) - 1, num=count, dtype=np.float64)
    resampled = np.interp(positions, np.arange(len(pcm)), pcm).astype(np.float32)
    return pcm16_bytes(resampled)


def session_config(model: str, *, language: str | None, prompt: str | None, server_vad: bool) -> dict[str, Any]:
    """A transcription session: 24 kHz PCM, the chosen model, and the server's VAD ending items at a 0.5 s pause."""
    transcription: dict[str, Any] = {"model": model}
    if language:
        transcription["language"] = language
    trimmed = trim_prompt(prompt)
    if trimmed:
        transcription["prompt"] = trimmed
    turn_detection = (
        {
            "type": "server_vad",
            "threshold": 0.5,
            "prefix_padding_ms": PREFIX_PADDING_MS,
            "silence_duration_ms": SILENCE_MS,
        }
        if server_vad
        else None
    )
    return {
        "type": "transcription",
        "audio": {
            "input": {
                "format": {"type": "audio/pcm", "rate": UPSTREAM_RATE},
                "transcription": transcription,
                "turn_detection": turn_detection,
            }
        },
    }


@dataclass
class _Item:
    item_id: str
    start_ms: int
    end_ms: int | None = None
    speech_end_ms: int | None = None
    text: str = ""  # the deltas so far
    transcript: str | None = None  # set by `.completed`


def _handshake_failure(exc: BaseException, base_url: str) -> EngineUnavailable:
    if isinstance(exc, InvalidStatus):
        status, headers = exc.response.status_code, exc.response.headers
        if status in (401, 403):
            return EngineUnavailable(
                f"OpenAI refused the API key for Realtime ({status}): set a valid OPENAI_API_KEY; the audio stays pending"
            )
        if status == 429:
            return EngineUnavailable(
                "OpenAI Realtime rate limit reached (429); the audio stays pending and is retried",
                retry_after=_retry_after_seconds(headers),
            )
        return EngineUnavailable(
            f"OpenAI Realtime answered {status} to the connection; the audio stays pending",
            retry_after=_retry_after_seconds(headers),
        )
    return EngineUnavailable(f"could not reach OpenAI Realtime at {base_url} ({exc}); the audio stays pending")


class RealtimeStream:
    """One open transcription session upstream: audio in, items settled in the order they were spoken."""

    def __init__(self, origin_ms: int, on_change: Callable[[], None], on_partial: Callable[[str], None]) -> None:
        self.origin_ms = origin_ms  # where this connection's audio begins on the speaker's clock
        self.failure: EngineUnavailable | None = None
        self._on_change = on_change
        self._on_partial = on_partial
        self._items: list[_Item] = []
        self._sent_samples = 0  # at 16 kHz
        self._appends: deque[tuple[float, int]] = deque()  # (monotonic time, sent_ms after it), recent ones
        self._committed_ms = 0  # the end of the last committed item
        self._commit_pending = False
        self._closing = False
        self._changed = asyncio.Event()
        self._connection: Any = None
        self._manager: Any = None
        self._reader: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ connection
    async def open(self, client: openai.AsyncOpenAI, config: dict[str, Any], base_url: str) -> None:
        """Connect with the transcription intent and configure the session; EngineUnavailable when refused."""
        self._manager = client.realtime.connect(extra_query={"intent": "transcription"})
        try:
            self._connection = await self._manager.enter()
            await self._connection.send(cast(Any, {"type": "session.update", "session": config}))
        except (WebSocketException, OSError, openai.OpenAIError, TimeoutError) as exc:
            if self._connection is not None:
                await self.close()
            raise _handshake_failure(exc, base_url) from exc
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        """Close the connection; items still open are dropped (their audio stays pending in the store)."""
        self._closing = True
        if self._reader is not None:
            self._reader.cancel()
        if self._connection is not None:
            try:
                await self._connection.close()
            except Exception:  # already gone: nothing to release
                log.debug("closing a Realtime connection failed", exc_info=True)

    # ------------------------------------------------------------------ audio
    @property
    def sent_ms(self) -> int:
        return self._sent_samples * 1000 // SAMPLE_RATE

    async def append(self, pcm: Pcm) -> None:
        self._raise_failure()
        if not len(pcm):
            return
        audio = base64.b64encode(to_upstream_rate(pcm)).decode("ascii")
        try:
            await self._connection.input_audio_buffer.append(audio=audio)
        except Exception as exc:
            self._fail(EngineUnavailable(f"the OpenAI Realtime connection dropped while sending audio ({exc})"))
            self._raise_failure()
        self._sent_samples += len(pcm)
        self._appends.append((time.monotonic(), self.sent_ms))
        while len(self._appends) > 2 and self._appends[1][0] < time.monotonic() - PROCESSING_LAG_S:
            self._appends.popleft()

    async def finish(self, timeout_s: float) -> None:
        """Commit what is left and wait until every item has its text; EngineUnavailable if it does not come."""
        self._raise_failure()
        if self.sent_ms - self._committed_ms >= 100 or self._open_item() is not None:
            self._commit_pending = True
            try:
                await self._connection.input_audio_buffer.commit()
            except Exception as exc:
                self._fail(EngineUnavailable(f"the OpenAI Realtime connection dropped at the commit ({exc})"))
        try:
            async with asyncio.timeout(timeout_s):
                while self.failure is None and self.busy:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            self._fail(EngineUnavailable(f"OpenAI Realtime gave no final text within {timeout_s:g} s"))
        self._raise_failure()

    # ------------------------------------------------------------------ what came back
    @property
    def busy(self) -> bool:
        """Speech is open, a commit is unanswered, or an item waits for its text."""
        return self._commit_pending or any(item.transcript is None for item in self._items)

    @property
    def has_settled(self) -> bool:
        return bool(self._items) and self._items[0].transcript is not None and self._items[0].end_ms is not None

    @property
    def settled_ms(self) -> int:
        """Audio (on this connection's clock) that no item can still reach back into: not past the start of any
        item not yet taken, nor into audio the server may not have judged yet (sent less than
        `PROCESSING_LAG_S` ago, a whole backlog sent at once on connecting included)."""
        judged = self._sent_ms_before(time.monotonic() - PROCESSING_LAG_S)
        limit = max(self._committed_ms, judged - PREFIX_PADDING_MS - DETECTION_MARGIN_MS)
        if self._commit_pending:
            limit = min(limit, self._committed_ms)
        return min([limit, *(item.start_ms for item in self._items)])

    def _sent_ms_before(self, moment: float) -> int:
        """How much audio had been sent at `moment` (monotonic)."""
        sent = 0
        for at, ms in self._appends:
            if at > moment:
                break
            sent = ms
        return sent

    def take_settled(self) -> list[SettledItem]:
        """Items with their final text, from the first spoken, up to the first still waiting."""
        settled: list[SettledItem] = []
        while self.has_settled:
            item = self._items.pop(0)
            end = item.end_ms if item.end_ms is not None else self.sent_ms
            speech_end = item.speech_end_ms if item.speech_end_ms is not None else end
            settled.append(
                SettledItem(
                    text=clean_text(item.transcript or ""),
                    start_ms=self.origin_ms + item.start_ms,
                    end_ms=self.origin_ms + end,
                    speech_end_ms=self.origin_ms + max(item.start_ms, speech_end),
                )
            )
        return settled

    def _open_item(self) -> _Item | None:
        return next((item for item in self._items if item.end_ms is None), None)

    def _raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def _fail(self, failure: EngineUnavailable) -> None:
        if self.failure is None:
            self.failure = failure
            log.warning("OpenAI Realtime: %s", failure.detail)
        self._changed.set()
        if self._connection is not None and not self._closing:
            asyncio.get_running_loop().create_task(self.close())
        self._on_change()

    # ------------------------------------------------------------------ events
    async def _read(self) -> None:
        try:
            async for event in self._connection:
                self._handle(event)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not self._closing:
                self._fail(
                    EngineUnavailable(f"the OpenAI Realtime connection dropped ({exc}); the audio is sent again")
                )
            return
        if not self._closing:
            self._fail(EngineUnavailable("OpenAI Realtime closed the connection; the audio is sent again"))

    def _handle(self, event: Any) -> None:
        kind = str(getattr(event, "type", ""))
        if kind == "input_audio_buffer.speech_started":
            self._items.append(_Item(str(event.item_id), start_ms=max(self._committed_ms, int(event.audio_start_ms))))
        elif kind == "input_audio_buffer.speech_stopped":
            item = self._item(str(event.item_id))
            if item is not None:
                item.end_ms = int(event.audio_end_ms)
                item.speech_end_ms = item.end_ms - SILENCE_MS
        elif kind == "input_audio_buffer.committed":
            self._committed(str(event.item_id))
        elif kind == "conversation.item.input_audio_transcription.delta":
            item = self._item(str(event.item_id))
            if item is not None and event.delta:
                item.text += str(event.delta)
                self._on_partial(self.open_text())
        elif kind == "conversation.item.input_audio_transcription.completed":
            item = self._item(str(event.item_id))
            if item is not None:
                item.transcript = str(event.transcript or "")
        elif kind == "conversation.item.input_audio_transcription.failed":
            error = event.error
            self._fail(
                EngineUnavailable(
                    f"OpenAI Realtime could not transcribe an item ({error.code or error.type}: {error.message})"
                )
            )
        elif kind == "error":
            self._error(event.error)
        else:
            return  # session.created/updated, rate_limits.updated, conversation.item.*: nothing to do
        self._changed.set()
        self._on_change()

    def _committed(self, item_id: str) -> None:
        self._commit_pending = False
        item = self._item(item_id) or self._open_item()
        if item is None:  # a manual commit with no speech detected: the whole uncommitted audio
            item = _Item(item_id, start_ms=self._committed_ms)
            self._items.append(item)
        item.item_id = item_id
        if item.end_ms is None:  # committed by hand mid-speech: the item ends where the audio sent so far ends
            item.end_ms = self.sent_ms
        self._committed_ms = max(self._committed_ms, item.end_ms)

    def _error(self, error: Any) -> None:
        code = str(getattr(error, "code", None) or getattr(error, "type", None) or "error")
        message = str(getattr(error, "message", "") or "")
        if code == COMMIT_EMPTY:  # nothing left to commit: the finish has nothing to wait for
            self._commit_pending = False
            return
        retry_after = 5 if "rate_limit" in code or "rate_limit" in str(getattr(error, "type", "")) else None
        self._fail(EngineUnavailable(f"OpenAI Realtime error {code}: {message}", retry_after=retry_after))

    def _item(self, item_id: str) -> _Item | None:
        return next((item for item in self._items if item.item_id == item_id), None)

    def open_text(self) -> str:
        """The words heard and not yet final: the speaker's partial line."""
        return clean_text(" ".join(item.text.strip() for item in self._items if item.text.strip()))


class RealtimeTranscriber(ReadyAtOnce):
    """OpenAI Realtime transcription: `open_stream` for live speakers, `transcribe` for one utterance."""

    name = "openai-realtime"
    partials_by_default = True  # the deltas are the partials, at no extra cost

    def __init__(
        self, api_key: str, *, model: str = "gpt-4o-transcribe", base_url: str | None = None, timeout_s: float = 30.0
    ) -> None:
        self.model = model
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.timeout_s = timeout_s
        self._client = openai.AsyncOpenAI(api_key=api_key, base_url=self.base_url, timeout=timeout_s)

    async def open_stream(
        self,
        *,
        origin_ms: int,
        language: str | None,
        prompt: str | None,
        on_change: Callable[[], None],
        on_partial: Callable[[str], None],
    ) -> RealtimeStream:
        """A live speaker's connection, its server VAD on."""
        stream = RealtimeStream(origin_ms, on_change, on_partial)
        config = session_config(self.model, language=language, prompt=prompt, server_vad=True)
        await stream.open(self._client, config, self.base_url)
        return stream

    async def transcribe(
        self, pcm: Pcm, *, language: str | None = None, prompt: str | None = None, draft: bool = False
    ) -> Transcription:
        """One utterance over its own connection, the VAD off: append it all, commit, wait for the text."""
        if len(pcm) / SAMPLE_RATE < MIN_DURATION_S:
            return Transcription(text="", language=language)
        stream = RealtimeStream(0, lambda: None, lambda _text: None)
        await stream.open(
            self._client, session_config(self.model, language=language, prompt=prompt, server_vad=False), self.base_url
        )
        try:
            await stream.append(pcm)
            await stream.finish(self.timeout_s)
            text = " ".join(item.text for item in stream.take_settled() if item.text)
        finally:
            await stream.close()
        return Transcription(text=clean_text(text), language=language)

    async def close(self) -> None:
        await self._client.close()
