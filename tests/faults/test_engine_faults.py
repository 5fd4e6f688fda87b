"""The OpenAI engine failing mid-interview: chunks are stored and answered `queued`, nothing is lost, and once the
API answers again the same bridge transcribes them by itself (no new chunk, no `end`, no restart).

Only the HTTP boundary is replaced: the openai SDK runs on an httpx client whose transport plays OpenAI's
`POST /v1/audio/transcriptions`, answering with OpenAI's documented error bodies or failing the way httpx fails
on a real network (a read timeout, a connection closed while the upload is under way, a reset). tests/stt covers
each error's mapping and tests/api/test_engine_outage.py one 500 on a single chunk; this is every fault, during
a stream of chunks, and the recovery.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.app import create_app
from shared.audio.decode import decode_chunk
from shared.audio.formats import inspect_chunk
from shared.settings import Settings
from shared.stt.openai_engine import OpenAITranscriber
from shared.stt.simulate import SimulatedTranscriber
from tests.faults.support import (
    Key,
    Tally,
    end_and_read,
    keys,
    new_session,
    post_until_stored,
    speech_stream,
    transcript,
    wait_for_transcript,
)
from tests.isolation.world import in_process, seed_api_key
from tests.stt.test_openai import INVALID_KEY_BODY, KEY, RATE_LIMIT_BODY, SERVER_ERROR_BODY, VERBOSE_JSON, fields

TIMEOUT_S = 0.2  # the engine's request timeout in these tests (OPENAI_TIMEOUT_S)
RETRY_S = 0.2  # the live path's first retry delay (ENGINE_RETRY_S); it doubles per failure
WAIT_MS = 3000  # each chunk waits for its run, so its answer says how the engine fared

FAULTS = [
    "401 invalid_api_key",
    "429 rate_limit_exceeded, Retry-After: 1",
    "500 server_error",
    "read timeout",
    "connection closed mid-upload",
    "connection reset mid-call",
]


class FakeTranscriptionsAPI(httpx.AsyncBaseTransport):
    """OpenAI's transcription endpoint with a fault the test switches on and off.

    Healthy, it answers `verbose_json` whose text is the simulated engine's for the uploaded audio: the same samples
    always give the same words, so two runs' transcripts can be compared word for word.
    """

    def __init__(self) -> None:
        self.fault: str | None = None
        self.calls: list[tuple[float, str | None]] = []  # (monotonic time, the fault it met or None)
        self._words = SimulatedTranscriber()

    @property
    def injected(self) -> int:
        return sum(1 for _, fault in self.calls if fault is not None)

    def first(self, *, faulted: bool) -> float:
        return next(at for at, fault in self.calls if (fault is not None) == faulted)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("POST", "/v1/audio/transcriptions")
        fault = self.fault
        self.calls.append((time.monotonic(), fault))
        if fault == "connection closed mid-upload":
            assert isinstance(request.stream, httpx.AsyncByteStream)
            async for _ in request.stream:  # the first part of the upload went out, then the server hung up
                break
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        await request.aread()
        if fault == "connection reset mid-call":
            raise httpx.ReadError("[Errno 104] Connection reset by peer", request=request)
        if fault == "read timeout":
            await asyncio.sleep(TIMEOUT_S)  # what the transport waits before it gives up on a silent server
            raise httpx.ReadTimeout("The read operation timed out", request=request)
        if fault == "401 invalid_api_key":
            return httpx.Response(401, json=INVALID_KEY_BODY)
        if fault == "429 rate_limit_exceeded, Retry-After: 1":
            return httpx.Response(429, json=RATE_LIMIT_BODY, headers={"retry-after": "1"})
        if fault == "500 server_error":
            return httpx.Response(500, json=SERVER_ERROR_BODY)
        assert fault is None, fault
        audio = fields(request)["file"][2]
        pcm = decode_chunk(audio, inspect_chunk(audio, "audio/wav"))
        text = (await self._words.transcribe(pcm)).text
        duration = round(len(pcm) / 16_000, 3)
        segment = {**VERBOSE_JSON["segments"][0], "text": f" {text}", "end": duration}
        return httpx.Response(200, json={**VERBOSE_JSON, "text": text, "duration": duration, "segments": [segment]})


@asynccontextmanager
async def openai_bridge(settings: Settings, api: FakeTranscriptionsAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A bridge on the `openai` engine whose HTTP requests reach `api` (no SDK retries: the bridge's own count)."""
    async with httpx.AsyncClient(transport=api) as http:
        engine = OpenAITranscriber(KEY, max_retries=0, timeout_s=TIMEOUT_S, http_client=http)
        async with in_process(create_app(settings, transcriber=engine)) as client:
            yield client


def engine_settings(make_settings: Callable[..., Settings], data_dir: Path) -> Settings:
    return make_settings(
        data_dir=data_dir,
        stt_engine="openai",
        openai_api_key=KEY,
        openai_timeout_s=TIMEOUT_S,
        engine_retry_s=RETRY_S,
    )


async def fault_free_transcript(make_settings: Callable[..., Settings], data_dir: Path) -> list[Key]:
    """The same chunks through the same API, healthy: every chunk `accepted`, the transcript to expect."""
    tally = Tally("reference")
    async with openai_bridge(engine_settings(make_settings, data_dir), FakeTranscriptionsAPI()) as client:
        api_key = await seed_api_key(client.app.state.services)  # type: ignore[attr-defined]
        session_id, token = await new_session(client, api_key, tally)
        for sequence, data in enumerate(speech_stream()):
            answer = await post_until_stored(
                client, token, session_id, "candidate", sequence, data, tally, wait_ms=WAIT_MS
            )
            assert answer["status"] == "accepted"
        final = keys((await end_and_read(client, token, session_id, tally))["entries"])
    assert len(final) == 2, final  # both sentences, each an entry of its own
    return final


@pytest.mark.parametrize("fault", FAULTS)
async def test_engine_fault_answers_queued_then_recovers(
    fault: str, make_settings: Callable[..., Settings], tmp_path: Path, report: Callable[[Tally], None]
) -> None:
    """While the OpenAI API fails, every chunk is stored and answered `queued` from the first failed call on; once it
    answers again the same bridge transcribes them unasked, into the transcript a fault-free run gives."""
    expected = await fault_free_transcript(make_settings, tmp_path / "reference")
    tally = Tally(f"engine: {fault}")
    api = FakeTranscriptionsAPI()
    api.fault = fault
    async with openai_bridge(engine_settings(make_settings, tmp_path / "faulted"), api) as client:
        api_key = await seed_api_key(client.app.state.services)  # type: ignore[attr-defined]
        session_id, token = await new_session(client, api_key, tally)
        statuses: list[str] = []
        for sequence, data in enumerate(speech_stream()):
            answer: dict[str, Any] = await post_until_stored(
                client, token, session_id, "candidate", sequence, data, tally, wait_ms=WAIT_MS
            )
            statuses.append(answer["status"])
            assert answer["entries"] == []
        first_queued = statuses.index("queued") if "queued" in statuses else len(statuses)
        assert 0 < first_queued < len(statuses), statuses
        assert statuses == ["accepted"] * first_queued + ["queued"] * (len(statuses) - first_queued), statuses
        assert (await transcript(client, token, session_id, tally))["entries"] == []  # nothing made up meanwhile
        assert api.injected >= len(statuses) - first_queued

        api.fault = None  # the API answers again: no chunk, no end, no restart needed
        recovered = await wait_for_transcript(client, token, session_id, tally, expected, within_s=10)
        assert recovered == expected, "the bridge did not transcribe the queued chunks by itself"
        if fault.startswith("429"):  # the bridge waited as long as the API asked before trying again
            assert api.first(faulted=False) - api.first(faulted=True) >= 1.0
        final = await end_and_read(client, token, session_id, tally)

    tally.injected = api.injected
    tally.settle(session_id, expected, keys(final["entries"]))
    report(tally)
    assert keys(final["entries"]) == expected
    assert final["failed_sequences"] == {}
    assert tally.lost == 0
    assert not [answer for answer in tally.statuses if answer.startswith("5")], tally.statuses
