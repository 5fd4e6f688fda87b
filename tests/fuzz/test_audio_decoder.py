"""Hypothesis against the live path's audio handling: truncated, corrupted and concatenated container bytes.

The inputs start from the committed fixtures (WAV at three rates and layouts, WebM/Opus from Chromium's
MediaRecorder, Ogg/Opus, plain and fragmented MP4, MP3, FLAC) and go through one to four mutations: cut the
end or the start, flip bits, overwrite a run of bytes, insert junk, append another fixture or a piece of one,
repeat a region. Positions fall in the first 256 bytes half of the time, where the headers are.

Each input goes through exactly what the live path runs: `inspect_chunk` on arrival (and `stream_header` for a
chunk that starts a stream), then `decode_chunk` in the speaker's run, with the stored stream header for a
continuation. The outcome must be 16 kHz mono float32 samples or `InvalidAudio` (the `invalid_audio` 400),
never another exception, and within 5 s (each decode runs in a worker thread with a deadline). Over HTTP, a
fuzzed chunk is 400 `invalid_audio` with nothing stored, or 200; the session then still ends with 200.
"""

from __future__ import annotations

import base64
import concurrent.futures
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient

from shared.audio import ogg
from shared.audio.decode import decode_chunk
from shared.audio.formats import ChunkFormat, inspect_chunk, stream_header
from shared.errors import InvalidAudio
from shared.stt.base import Pcm
from tests.fuzz.counts import Tally, tally
from tests.fuzz.support import add_tenant
from tests.helpers import FIXTURES, bearer

DEADLINE_S = 5.0
HEAD = 256  # bytes where container headers live; half the mutations land here
T = TypeVar("T")


def _read(name: str) -> bytes:
    return (FIXTURES / "audio" / name).read_bytes()


@dataclass(frozen=True)
class Sample:
    name: str
    data: bytes
    mime: str


_OGG = _read("phrase.ogg")
_OGG_HEADER = ogg.header_pages(_OGG) or b""
# Chunks a browser or a file upload sends first: self-contained files and stream-starting chunks.
FIRST_CHUNKS = (
    Sample("wav-16k", _read("phrase_16k_s16.wav")[:24_044], "audio/wav"),
    Sample("wav-44k1-stereo", _read("phrase_44k1_stereo_s16.wav")[:24_044], "audio/wav"),
    Sample("wav-48k-f32", _read("phrase_48k_f32.wav")[:24_058], "audio/wav"),
    Sample("wav-placeholder", _read("phrase_placeholder_size.wav")[:16_044], "audio/wav"),
    Sample("webm", _read("phrase.webm"), "audio/webm;codecs=opus"),
    Sample("webm-first", _read("webm_chunk_000.webm"), "audio/webm;codecs=opus"),
    Sample("ogg", _OGG, "audio/ogg;codecs=opus"),
    Sample("m4a", _read("phrase.m4a"), "audio/mp4"),
    Sample("mp4-first", _read("mp4_chunk_000.mp4") + _read("mp4_chunk_001.mp4"), "audio/mp4"),
    Sample("fmp4-first", _read("fmp4_header.mp4") + _read("fmp4_frag_000.m4s"), "audio/mp4"),
    Sample("mp3", _read("phrase.mp3"), "audio/mpeg"),
    Sample("flac", _read("phrase.flac")[:16_000], "audio/flac"),
)
# (stream header, continuation chunks that follow it)
STREAMS = {
    "webm": (_read("webm_chunk_000.webm"), [_read(f"webm_chunk_00{i}.webm") for i in range(1, 5)], "audio/webm"),
    "mp4": (_read("mp4_chunk_000.mp4"), [_read(f"mp4_chunk_00{i}.mp4") for i in range(1, 5)], "audio/mp4"),
    "fmp4": (_read("fmp4_header.mp4"), [_read(f"fmp4_frag_00{i}.m4s") for i in range(3)], "audio/mp4"),
    "ogg": (_OGG_HEADER, [_OGG[len(_OGG_HEADER) :]], "audio/ogg"),
}
MIMES = (None, "audio/wav", "audio/webm", "audio/ogg", "audio/mp4", "audio/mpeg", "audio/flac", "video/webm")
EVERYTHING = [s.data for s in FIRST_CHUNKS] + [c for _, chunks, _ in STREAMS.values() for c in chunks]

decoder = tally(
    "audio decoder",
    inputs="inputs",
    decoded="decoded",
    refused="refused invalid_audio",
    other_errors="other exceptions",
    hangs="hangs",
)
over_http = tally(
    "audio over HTTP",
    inputs="chunks posted",
    accepted="accepted",
    refused="refused 400 invalid_audio",
    server_errors="server errors",
    stored_after_400="stored after a 400",
    failed_ends="sessions that failed to end",
)


@pytest.fixture(scope="module")
def worker() -> Iterator[concurrent.futures.ThreadPoolExecutor]:
    """One thread that runs each decode, so a hang is seen as a missed deadline rather than a stuck run."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fuzz-decode") as pool:
        yield pool


# ------------------------------------------------------------------------------------------- inputs
@st.composite
def position(draw: st.DrawFn, size: int) -> int:
    upper = draw(st.sampled_from((min(size, HEAD), size)))
    return draw(st.integers(0, upper))


@dataclass(frozen=True)
class Fuzzed:
    """Bytes made from a fixture, shown in reports by their recipe (the bytes themselves are too long to print)."""

    recipe: tuple[str, ...]
    data: bytes = field(repr=False)


@st.composite
def mutated(draw: st.DrawFn, source: bytes) -> Fuzzed:
    """`source` after one to four of: truncation, a cut head, bit flips, a byte run, inserted junk, a
    concatenated fixture (or a piece of one), a repeated region."""
    data = bytearray(source)
    recipe = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(("truncate", "cut_head", "flip", "run", "insert", "concat", "repeat")))
        at = draw(position(len(data)))
        if kind == "truncate":
            del data[at:]
        elif kind == "cut_head":
            del data[:at]
        elif kind == "flip" and data:
            spots = []
            for _ in range(draw(st.integers(1, 8))):
                spot, bit = min(draw(position(len(data))), len(data) - 1), draw(st.integers(0, 7))
                data[spot] ^= 1 << bit
                spots.append(f"{spot}^{bit}")
            at = int(spots[0].split("^")[0])
            kind += "[" + ",".join(spots) + "]"
        elif kind == "run":
            length = draw(st.integers(1, 64))
            fill = draw(st.sampled_from((0x00, 0xFF, 0x80, draw(st.integers(0, 255)))))
            data[at : at + length] = bytes([fill]) * length
            kind += f"[{length}x{fill:02x}]"
        elif kind == "insert":
            junk = draw(st.binary(min_size=1, max_size=64))
            data[at:at] = junk
            kind += f"[{junk.hex()}]"
        elif kind == "concat":
            index = draw(st.integers(0, len(EVERYTHING) - 1))
            other = EVERYTHING[index]
            start = draw(st.integers(0, len(other)))
            piece = other[start : start + draw(st.integers(1, 8192))]
            data += piece
            kind += f"[fixture {index} {start}:{start + len(piece)}]"
        elif kind == "repeat" and data:
            length = draw(st.integers(1, 512))
            data[at:at] = data[at : at + length]
            kind += f"[{length}]"
        recipe.append(f"{kind}@{at}")
    return Fuzzed(tuple(recipe), bytes(data))


@st.composite
def first_chunk(draw: st.DrawFn) -> tuple[str, Fuzzed, str | None]:
    sample = draw(st.sampled_from(FIRST_CHUNKS))
    mime = draw(st.sampled_from((sample.mime, sample.mime, *MIMES)))
    return sample.name, draw(mutated(sample.data)), mime


# ------------------------------------------------------------------------------------------- outcome
def bounded(worker: concurrent.futures.ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in the worker thread; a hang past the deadline fails the test (the thread is abandoned)."""
    future = worker.submit(fn, *args)
    try:
        return future.result(timeout=DEADLINE_S)
    except concurrent.futures.TimeoutError:
        decoder.add("hangs")
        raise AssertionError(f"{getattr(fn, '__name__', fn)} took more than {DEADLINE_S} s") from None


def expect_pcm_or_invalid_audio(count: Tally, attempt: Callable[[], Pcm | None]) -> None:
    """Run one input to its end: samples, or InvalidAudio, and nothing else."""
    count.add("inputs")
    refusal = ""
    try:
        pcm = attempt()
    except InvalidAudio as exc:
        pcm, refusal = None, exc.detail or "(no detail)"
    except AssertionError:
        raise
    except Exception as exc:
        count.add("other_errors")
        raise AssertionError(f"not InvalidAudio but {type(exc).__name__}: {exc}") from exc
    if refusal:
        count.add("refused")
        assert refusal.strip() and refusal != "(no detail)", "invalid_audio must say what is wrong"
        return
    count.add("decoded")
    if pcm is not None:
        assert isinstance(pcm, np.ndarray) and pcm.dtype == np.float32 and pcm.ndim == 1, repr(pcm)[:200]
        assert np.isfinite(pcm).all(), "the decoded samples are not all finite"


def arrive_and_decode(data: bytes, mime: str | None, header: bytes | None) -> Pcm | None:
    """What the live path does with a chunk: `inspect_chunk` on arrival (refusing a continuation with no stream
    header), `stream_header` if it starts a stream, then `decode_chunk` in the speaker's run (a continuation
    decodes as the kind of the stored header). None: an empty chunk, stored as `skipped`."""
    if not data:
        return None
    fmt = inspect_chunk(data, mime)
    if fmt.starts_stream:
        stream_header(data, fmt)
        return decode_chunk(data, fmt)
    if header is None:
        raise InvalidAudio("a continuation chunk with no stream header before it")
    kind = inspect_chunk(header, None).kind
    return decode_chunk(data, ChunkFormat(kind, False, False), header)


def header_of(data: bytes, mime: str | None) -> bytes | None:
    """The stream header the live path stores for a stream-starting chunk (None when it would store none)."""
    fmt = inspect_chunk(data, mime)
    return stream_header(data, fmt) if fmt.starts_stream and fmt.kind in ("webm", "ogg", "mp4") else None


_SETTINGS = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))


# ------------------------------------------------------------------------------------------- tests
def test_fuzzed_first_chunks_decode_or_are_refused(worker: concurrent.futures.ThreadPoolExecutor) -> None:
    """A truncated, corrupted or concatenated first chunk of any format decodes to 16 kHz mono samples or is
    refused as invalid_audio, never another error and never a hang."""

    @settings(_SETTINGS, max_examples=600)
    @given(chunk=first_chunk())
    def run(chunk: tuple[str, Fuzzed, str | None]) -> None:
        _, fuzzed, mime = chunk
        expect_pcm_or_invalid_audio(decoder, lambda: bounded(worker, arrive_and_decode, fuzzed.data, mime, None))

    run()


def test_fuzzed_continuations_decode_or_are_refused(worker: concurrent.futures.ThreadPoolExecutor) -> None:
    """A corrupted continuation chunk, after a stream header that may itself be corrupted or of another
    container, decodes or is refused as invalid_audio, never another error and never a hang."""

    @settings(_SETTINGS, max_examples=400)
    @given(
        stream=st.sampled_from(sorted(STREAMS)),
        foreign=st.sampled_from(sorted(STREAMS)),
        corrupt_header=st.booleans(),
        data=st.data(),
    )
    def run(stream: str, foreign: str, corrupt_header: bool, data: st.DataObject) -> None:
        first, _, mime = STREAMS[stream]
        if corrupt_header:
            first = data.draw(mutated(first), label="first chunk").data
        index = data.draw(st.integers(0, len(STREAMS[foreign][1]) - 1), label="chunk")
        chunk = data.draw(mutated(STREAMS[foreign][1][index]), label="continuation").data
        chunk_mime = data.draw(st.sampled_from((None, mime)), label="mime")

        def live() -> Pcm | None:
            return arrive_and_decode(chunk, chunk_mime, header_of(first, mime))

        # the header chunk is checked on arrival first; a refused one leaves the continuation headerless
        expect_pcm_or_invalid_audio(decoder, lambda: bounded(worker, live))

    run()


def _stored(client: TestClient[Litestar], session_id: str, speaker: str) -> int:
    store = client.app.state.services.store
    return len(client.blocking_portal.call(store.list_chunks, session_id, speaker))


def test_fuzzed_chunks_over_http_are_invalid_audio_or_accepted(fuzz_bridge: Callable[..., Any]) -> None:
    """A fuzzed chunk posted to process-audio is answered 400 invalid_audio with nothing stored, or 200; it is
    never a 5xx, and the session still ends with 200 once the run has decoded (or skipped) it."""
    with fuzz_bridge(gap_timeout_s=3600.0) as client:
        tenant_key = add_tenant(client, "fuzz")[1]

        @settings(_SETTINGS, max_examples=100)
        @given(chunk=first_chunk(), continuation=st.booleans(), corrupt_header=st.booleans(), data=st.data())
        def run(
            chunk: tuple[str, Fuzzed, str | None], continuation: bool, corrupt_header: bool, data: st.DataObject
        ) -> None:
            created = client.post("/sessions", json={}, headers={"Authorization": f"Bearer {tenant_key}"})
            assert created.status_code == 201, created.text
            session_id, token = created.json()["session"]["id"], created.json()["token"]
            auth = {"Authorization": f"Bearer {token}"}
            _, fuzzed, mime = chunk
            payload = fuzzed.data
            sequence = 0
            if continuation:  # a stream's first chunk (real or corrupted), then the fuzzed bytes as its next chunk
                first, chunks, mime = STREAMS[data.draw(st.sampled_from(sorted(STREAMS)), label="stream")]
                if corrupt_header:
                    first = data.draw(mutated(first), label="first chunk").data
                index = data.draw(st.integers(0, len(chunks) - 1), label="chunk")
                payload = data.draw(mutated(chunks[index]), label="continuation").data
                head = client.post("/functions/v1/process-audio", json=_chunk(session_id, 0, first, mime), headers=auth)
                assert head.status_code in (200, 400), head.text
                sequence = 1
            before = _stored(client, session_id, "candidate")
            answer = client.post(
                "/functions/v1/process-audio",
                json=_chunk(session_id, sequence, payload, mime) | {"wait_ms": 2000},
                headers=auth,
            )
            over_http.add("inputs")
            if answer.status_code >= 500:
                over_http.add("server_errors")
            assert answer.status_code in (200, 400), answer.text
            if answer.status_code == 400:
                over_http.add("refused")
                assert answer.json()["error"] == "invalid_audio", answer.text
                if _stored(client, session_id, "candidate") != before:
                    over_http.add("stored_after_400")
                    raise AssertionError("a chunk refused with 400 was stored")
            else:
                over_http.add("accepted")
                assert answer.json()["status"] in ("accepted", "skipped"), answer.text
            ended = client.post(f"/sessions/{session_id}/end", headers=auth)
            if ended.status_code != 200:
                over_http.add("failed_ends")
            assert ended.status_code == 200, ended.text
            assert client.get(f"/sessions/{session_id}/transcript", headers=auth).status_code == 200

        run()


def _chunk(session_id: str, sequence: int, data: bytes, mime: str | None) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "speaker": "candidate",
        "sequence_number": sequence,
        "audio_chunk": base64.b64encode(data).decode(),
        "mime_type": mime,
    }


# ------------------------------------------------------------------------------------------- found by fuzzing
def _float_wav(samples: list[float]) -> bytes:
    data = np.array(samples, dtype="<f4").tobytes()
    fmt = struct.pack("<HHIIHH", 3, 1, 16_000, 64_000, 4, 32)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", len(riff)) + riff


UNKNOWN_CODEC_WEBM = _read("webm_chunk_000.webm").replace(b"A_OPUS", b"A_OPUs")  # as bit flips in CodecID make it


def test_float_wav_with_non_finite_samples_decodes_to_full_scale() -> None:
    """A float WAV holding NaN, infinities or values past full scale (a corrupt file) decodes to finite samples
    within full scale: NaN as silence, the rest clipped."""
    data = _float_wav([0.5, float("nan"), float("inf"), float("-inf"), 3e38, -2.0, 0.25])
    pcm = arrive_and_decode(data, "audio/wav", None)
    assert pcm is not None
    assert pcm.tolist() == [0.5, 0.0, 1.0, -1.0, 1.0, -1.0, 0.25]


def test_stream_header_naming_an_unknown_codec_is_invalid_audio() -> None:
    """A WebM stream whose header names a codec FFmpeg cannot decode is invalid_audio, for its first chunk and for
    the continuations decoded with its header (not an AttributeError that failed the speaker's run)."""
    header = header_of(UNKNOWN_CODEC_WEBM, "audio/webm")
    with pytest.raises(InvalidAudio):
        arrive_and_decode(UNKNOWN_CODEC_WEBM, "audio/webm", None)
    with pytest.raises(InvalidAudio):
        arrive_and_decode(_read("webm_chunk_001.webm"), "audio/webm", header)


def test_session_with_an_undecodable_stream_still_ends(fuzz_bridge: Callable[..., Any]) -> None:
    """A WebM stream whose header names an unknown codec is taken (200) and skipped: the session ends with 200
    and an empty transcript (ending it answered 500 before the decoder refused such a track)."""
    with fuzz_bridge() as client:
        auth = bearer(add_tenant(client, "fuzz")[1])
        session_id = client.post("/sessions", json={}, headers=auth).json()["session"]["id"]
        for sequence, data in enumerate([UNKNOWN_CODEC_WEBM, _read("webm_chunk_001.webm")]):
            body = _chunk(session_id, sequence, data, "audio/webm") | {"wait_ms": 2000}
            answer = client.post("/functions/v1/process-audio", json=body, headers=auth)
            assert answer.status_code == 200 and answer.json()["status"] == "accepted", answer.text
        ended = client.post(f"/sessions/{session_id}/end", headers=auth)
        assert ended.status_code == 200, ended.text
        transcript = client.get(f"/sessions/{session_id}/transcript", headers=auth)
        assert transcript.status_code == 200 and transcript.json()["entries"] == []
