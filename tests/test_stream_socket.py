"""The streaming socket over a real uvicorn: real speech in PCM and WebM/Opus frames, acks, back-pressure, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from bridge.app import create_app
from bridge.services import Services
from bridge.stream_client import StreamRefused, pcm_frames, socket_url, stream_frames
from shared.settings import Settings
from shared.stt.base import Transcriber
from shared.stt.wavio import pcm16_bytes
from shared.stt.wer import word_errors
from tests.conftest import KeepOpen
from tests.helpers import FIXTURES, chunk_body, load_pcm, wav_chunks
from tests.isolation.world import seed_api_key, serve

SPEECH = FIXTURES / "live" / "two_sentences.flac"
SPEECH_TEXT = (FIXTURES / "live" / "two_sentences.txt").read_text(encoding="utf-8").strip()
AUDIO = FIXTURES / "audio"
PHRASE = (AUDIO / "phrase.txt").read_text(encoding="utf-8").strip()
PCM = "audio/pcm;rate=16000"


@dataclass
class Running:
    base: str
    http: httpx.AsyncClient
    services: Services

    async def session(self, key: str, **body: Any) -> tuple[str, str]:
        created = await self.http.post("/sessions", json=body, headers={"Authorization": f"Bearer {key}"})
        assert created.status_code == 201, created.text
        return created.json()["session"]["id"], created.json()["token"]

    async def tenant_key(self) -> str:
        response = await self.http.post("/demo/tenant")  # a loopback bridge's demo tenant
        assert response.status_code == 201
        key: str = response.json()["api_key"]
        return key

    async def https_transcript(self, token: str, session_id: str, chunks: list[bytes], mime: str) -> str:
        """The same audio as process-audio chunks, then `end`: the transcript text."""
        headers = {"Authorization": f"Bearer {token}"}
        for sequence, chunk in enumerate(chunks):
            body = chunk_body(session_id, "candidate", sequence, chunk, mime)
            assert (await self.http.post("/functions/v1/process-audio", json=body, headers=headers)).status_code == 200
        return await self.end_and_read(token, session_id)

    async def end_and_read(self, token: str, session_id: str) -> str:
        headers = {"Authorization": f"Bearer {token}"}
        assert (await self.http.post(f"/sessions/{session_id}/end", headers=headers)).status_code == 200
        transcript = await self.http.get(f"/sessions/{session_id}/transcript", headers=headers)
        return " ".join(entry["text"] for entry in transcript.json()["entries"])


@asynccontextmanager
async def bridge(settings: Settings, transcriber: Transcriber | None = None) -> AsyncIterator[Running]:
    app = create_app(settings, transcriber=KeepOpen(transcriber) if transcriber else None)
    async with serve(app) as port:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=60) as http:
            yield Running(base, http, app.state.services)


def cut(data: bytes, size: int) -> list[bytes]:
    """Bytes cut every `size` bytes, wherever that falls (as a recorder's timeslice cuts a container)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("kind", ["pcm", "webm"])
async def test_streamed_speech_gives_what_https_chunks_give(
    make_settings: Callable[..., Settings], local_transcriber: Transcriber, kind: str
) -> None:
    """Real speech streamed as 250 ms PCM frames, or as a WebM/Opus recording cut into small frames, is
    transcribed within 1.10x the word errors of the same audio sent as process-audio chunks; every frame is
    acknowledged once, in order, and the speaker's entries come back on the socket."""
    async with bridge(make_settings(), local_transcriber) as running:
        key = await running.tenant_key()
        if kind == "pcm":
            reference, frames, mime = SPEECH_TEXT, pcm_frames(SPEECH, 250), PCM
            https_chunks, https_mime = wav_chunks(load_pcm(SPEECH), 2.0), "audio/wav"
        else:
            recorded = [path.read_bytes() for path in sorted(AUDIO.glob("webm_chunk_*"))]
            reference, frames, mime = f"{PHRASE} {PHRASE}", cut(b"".join(recorded), 1_500), "audio/webm;codecs=opus"
            https_chunks, https_mime = recorded, "audio/webm"
        session_id, token = await running.session(key)
        url = socket_url(running.base, session_id, "candidate", token, mime)
        streamed = await stream_frames(url, frames, frame_s=0.25, pace=None)
        streamed_text = await running.end_and_read(token, session_id)
        other_id, other_token = await running.session(key)
        https_text = await running.https_transcript(other_token, other_id, https_chunks, https_mime)
    assert streamed.acked == list(range(len(frames)))
    assert streamed.entries and {entry["speaker"] for entry in streamed.entries} == {"candidate"}
    assert streamed.text == streamed_text
    stream_errors, words = word_errors(reference, streamed_text)
    https_errors, _ = word_errors(reference, https_text)
    print(f"{kind}: streamed {stream_errors}/{words} word errors, https chunks {https_errors}/{words}")
    assert stream_errors <= max(1.10 * https_errors, https_errors + 1)


async def test_a_client_far_ahead_of_real_time_has_its_acks_withheld(make_settings: Callable[..., Settings]) -> None:
    """Frames within 5 s of audio ahead of the clock are acknowledged at once; later ones wait for the live path
    (`throttled`), so a client sending faster than real time is slowed, not buffered."""
    async with bridge(make_settings(simulate_latency_ms=200)) as running:
        session_id, token = await running.session(await running.tenant_key())
        frames = [b"\x01\x00" * 8_000] * 40  # 40 frames of 500 ms: 20 s of audio at once
        run = await stream_frames(socket_url(running.base, session_id, "a", token, PCM), frames, frame_s=0.5, pace=None)
    assert run.acked == list(range(40))
    assert 20 <= run.throttled <= 31  # everything past the first ~10 frames (5 s) waited


@pytest.mark.parametrize(
    ("change", "code", "error"),
    [
        ({"token": "not-a-token"}, 4401, "unauthorized"),
        ({"session_id": "00000000-0000-0000-0000-000000000000"}, 4404, "not_found"),
        ({"mime_type": "video/x-msvideo"}, 4400, "invalid_request"),
        ({"mime_type": ""}, 4400, "invalid_request"),
        ({"speaker": "a\u0000b"}, 4400, "invalid_request"),
    ],
)
async def test_a_bad_socket_request_is_refused_with_its_code(
    make_settings: Callable[..., Settings], change: dict[str, str], code: int, error: str
) -> None:
    """A bad credential, an unknown session, an unusable mime type or speaker: an error message and 44xx."""
    async with bridge(make_settings()) as running:
        session_id, token = await running.session(await running.tenant_key())
        params = {"session_id": session_id, "speaker": "a", "token": token, "mime_type": PCM, **change}
        url = socket_url(running.base, params["session_id"], params["speaker"], params["token"], params["mime_type"])
        with pytest.raises(StreamRefused) as refused:
            await stream_frames(url, [b"\x00\x00" * 4000], frame_s=0.25, pace=None)
    assert (refused.value.code, refused.value.error.get("error")) == (code, error)


@pytest.mark.parametrize(
    ("mime", "frame", "code"),
    [
        ("audio/webm;codecs=opus", b"\x12\x34" * 400, 4400),  # garbage: no header on the first frame
        (PCM, b"\x00" * 4001, 4400),  # half a sample
        (PCM, b"\x00" * 600_000, 4413),  # oversize
    ],
)
async def test_bad_frames_are_refused_and_nothing_is_stored(
    make_settings: Callable[..., Settings], mime: str, frame: bytes, code: int
) -> None:
    """Garbage, half samples and oversize frames close the socket with 4400 or 4413 and store nothing."""
    async with bridge(make_settings()) as running:
        session_id, token = await running.session(await running.tenant_key())
        with pytest.raises(StreamRefused) as refused:
            await stream_frames(
                socket_url(running.base, session_id, "a", token, mime), [frame], frame_s=0.25, pace=None
            )
        session = await running.http.get(f"/sessions/{session_id}", headers={"Authorization": f"Bearer {token}"})
    assert refused.value.code == code
    assert session.json()["next_sequence"] == {}


async def test_other_tenants_and_ended_sessions_are_refused(make_settings: Callable[..., Settings]) -> None:
    """Another tenant's session looks unknown (4404); a session ended past its grace is closed (4409); the
    credential may also come as the first message."""
    async with bridge(make_settings(end_grace_s=0.0)) as running:
        key = await running.tenant_key()
        session_id, token = await running.session(key)
        foreign_key = await seed_api_key(running.services, "globex")
        with pytest.raises(StreamRefused) as foreign:
            await stream_frames(socket_url(running.base, session_id, "a", foreign_key, PCM), [b"\0\0"], frame_s=0.1)
        async with connect(socket_url(running.base, session_id, "a", "", PCM).replace("&token=", "&x=")) as socket:
            await socket.send(json.dumps({"type": "auth", "token": token}))
            ready = json.loads(await socket.recv())
        await running.http.post(f"/sessions/{session_id}/end", headers={"Authorization": f"Bearer {token}"})
        with pytest.raises(StreamRefused) as ended:
            await stream_frames(socket_url(running.base, session_id, "a", token, PCM), [b"\0\0"], frame_s=0.1)
    assert foreign.value.code == 4404
    assert ready == {"type": "ready", "next_sequence": 0}
    assert ended.value.code == 4409


async def test_frames_past_the_chunk_rate_limit_close_the_socket_with_4429(
    make_settings: Callable[..., Settings],
) -> None:
    """Each frame counts against the session's chunk rate (burst 60, 20 a second): a flood past it gets
    `rate_limited` with a `retry_after` and 4429, after the frames within it were stored and acknowledged."""
    async with bridge(make_settings()) as running:
        session_id, token = await running.session(await running.tenant_key())
        messages = []
        async with connect(socket_url(running.base, session_id, "a", token, PCM)) as socket:
            assert json.loads(await socket.recv())["type"] == "ready"
            with contextlib.suppress(ConnectionClosed):  # the server closes with 4429 mid-flood
                for _ in range(200):
                    await socket.send(b"\0\0" * 1_600)
                async for raw in socket:
                    messages.append(json.loads(raw))
            with contextlib.suppress(ConnectionClosed):
                while True:
                    messages.append(json.loads(await socket.recv()))
            code = socket.close_code
        session = await running.http.get(f"/sessions/{session_id}", headers={"Authorization": f"Bearer {token}"})
    error = messages[-1]
    assert code == 4429 and (error["type"], error["error"]) == ("error", "rate_limited") and error["retry_after"] > 0
    acked = [m["sequence_number"] for m in messages if m["type"] == "ack"]
    assert 60 <= len(acked) < 200 and session.json()["next_sequence"]["a"] == len(acked)


async def test_a_streamed_speaker_gets_its_line_at_a_shorter_pause_than_chunks(
    make_settings: Callable[..., Settings],
) -> None:
    """Speech, a 0.6 s pause, more speech: over the socket the first utterance is final at the pause (streamed
    speakers end an utterance at 0.5 s); as process-audio chunks of the same audio it is not (0.8 s)."""
    first = load_pcm(FIXTURES / "speech" / "librispeech_1221-135766-0002.wav")[: int(16_000 * 4.5)]  # to its last word
    second = load_pcm(FIXTURES / "speech" / "librispeech_7902-96591-0000.wav")[int(16_000 * 0.32) :]  # from its first
    pause, tail = np.zeros(int(16_000 * 0.6), np.float32), np.zeros(int(16_000 * 0.3), np.float32)
    audio = np.concatenate([first, pause, second, tail])
    frames = [pcm16_bytes(piece) for piece in np.array_split(audio, len(audio) // 4_000)]
    async with bridge(make_settings()) as running:
        key = await running.tenant_key()
        streamed_id, streamed_token = await running.session(key)
        socket = await connect(socket_url(running.base, streamed_id, "a", streamed_token, PCM))
        assert json.loads(await socket.recv())["type"] == "ready"
        for frame in frames:
            await socket.send(frame)
            assert json.loads(await socket.recv())["type"] in ("ack", "partial", "entry")
        chunked_id, chunked_token = await running.session(key)
        for sequence, chunk in enumerate(wav_chunks(audio, 0.25)):
            body = chunk_body(chunked_id, "a", sequence, chunk)
            headers = {"Authorization": f"Bearer {chunked_token}"}
            assert (
                await running.http.post("/functions/v1/process-audio", json=body, headers=headers)
            ).status_code == 200
        await asyncio.sleep(1.5)  # both runs settle; neither session has ended
        lines = {}
        for session_id, token in ((streamed_id, streamed_token), (chunked_id, chunked_token)):
            read = await running.http.get(
                f"/sessions/{session_id}/transcript", headers={"Authorization": f"Bearer {token}"}
            )
            lines[session_id] = read.json()["entries"]
        await socket.close()
    assert len(lines[streamed_id]) == 1  # the first utterance, without the second one
    line = lines[streamed_id][0]
    assert len(first) / 16 - 500 <= line["end_ms"] - line["start_ms"] < (len(first) + len(pause)) / 16
    assert lines[chunked_id] == []


async def test_an_open_socket_is_closed_for_frames_after_its_session_ended(
    make_settings: Callable[..., Settings],
) -> None:
    """A socket opened while the session was active takes no frame once the session has ended and its grace is
    over: `session_closed` and 4409, and the frame is not stored."""
    async with bridge(make_settings(end_grace_s=0.0)) as running:
        session_id, token = await running.session(await running.tenant_key())
        async with connect(socket_url(running.base, session_id, "a", token, PCM)) as socket:
            assert json.loads(await socket.recv())["type"] == "ready"
            await socket.send(b"\0\0" * 1_600)
            assert json.loads(await socket.recv())["type"] == "ack"
            headers = {"Authorization": f"Bearer {token}"}
            assert (await running.http.post(f"/sessions/{session_id}/end", headers=headers)).status_code == 200
            await asyncio.sleep(1.2)  # past the socket's one-second view of the session
            await socket.send(b"\0\0" * 1_600)
            with contextlib.suppress(ConnectionClosed):
                error = json.loads(await socket.recv())
                await socket.recv()
            code = socket.close_code
        session = await running.http.get(f"/sessions/{session_id}", headers=headers)
    assert (code, error["error"]) == (4409, "session_closed")
    assert session.json()["next_sequence"] == {"a": 1}
