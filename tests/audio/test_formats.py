"""inspect_chunk and stream_header: the cheap on-arrival classification of chunks."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from shared.audio.formats import ChunkFormat, inspect_chunk, kind_for_mime, stream_header
from shared.audio.webm import CLUSTER_ID, EBML_ID
from shared.errors import InvalidAudio
from tests.audio.support import chunks, read, wav_bytes

STARTS = ChunkFormat
NOISE = np.random.default_rng(7).integers(0, 256, 4000, dtype=np.uint8).tobytes()


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("phrase_16k_s16.wav", STARTS("wav", True, True)),
        ("phrase_44k1_stereo_s16.wav", STARTS("wav", True, True)),
        ("phrase_48k_f32.wav", STARTS("wav", True, True)),
        ("phrase_placeholder_size.wav", STARTS("wav", True, True)),
        ("phrase.webm", STARTS("webm", True, True)),
        ("phrase.ogg", STARTS("ogg", True, True)),
        ("phrase.mp3", STARTS("mp3", True, True)),
        ("phrase.flac", STARTS("flac", True, True)),
        ("phrase.m4a", STARTS("mp4", True, True)),
        ("fmp4_header.mp4", STARTS("mp4", True, True)),
        ("fmp4_frag_001.m4s", STARTS("mp4", False, False)),
        ("webm_chunk_000.webm", STARTS("webm", True, True)),
        ("webm_chunk_001.webm", STARTS(None, False, False)),
        ("mp4_chunk_000.mp4", STARTS("mp4", True, True)),
        ("mp4_chunk_002.mp4", STARTS("mp4", False, False)),
    ],
)
def test_inspect_classifies_each_fixture(name: str, expected: ChunkFormat) -> None:
    """Every fixture is classified by its first bytes alone, without a mime hint."""
    assert inspect_chunk(read(name), None) == expected


def test_mime_hint_names_the_kind_of_a_headerless_continuation() -> None:
    """A MediaRecorder continuation blob takes its kind from the mime type, codecs parameter and case aside."""
    fmt = inspect_chunk(read("webm_chunk_002.webm"), "Audio/WebM; codecs=opus")
    assert fmt == ChunkFormat("webm", False, False)


@pytest.mark.parametrize(
    ("mime", "kind"),
    [
        ("audio/wav", "wav"),
        ("audio/x-wav", "wav"),
        ("audio/wave", "wav"),
        ("audio/webm;codecs=opus", "webm"),
        ('video/webm;codecs="opus"', "webm"),
        ("audio/ogg; codecs=opus", "ogg"),
        ("audio/mpeg", "mp3"),
        ("audio/mp3", "mp3"),
        ("audio/flac", "flac"),
        ("audio/x-flac", "flac"),
        ("audio/mp4;codecs=mp4a.40.2", "mp4"),
        ("audio/m4a", "mp4"),
        ("audio/x-m4a", "mp4"),
        ("VIDEO/MP4", "mp4"),
        ("", None),
        (None, None),
    ],
)
def test_accepted_mime_types(mime: str | None, kind: str | None) -> None:
    """Each audio type the bridge decodes maps to its kind, with or without parameters, in any case."""
    assert kind_for_mime(mime) == kind


@pytest.mark.parametrize("mime", ["text/plain", "image/png", "audio/aac", "application/octet-stream", "audio/"])
def test_unsupported_mime_types_are_invalid_audio(mime: str) -> None:
    """A mime type the bridge cannot decode is rejected with a detail that lists what to send."""
    with pytest.raises(InvalidAudio, match="audio/wav"):
        inspect_chunk(read("phrase_16k_s16.wav"), mime)


def test_random_bytes_without_hint_are_a_continuation() -> None:
    """Bytes with no recognisable header and no hint are a continuation: the caller decides later."""
    assert inspect_chunk(NOISE, None) == ChunkFormat(None, False, False)


@pytest.mark.parametrize("mime", ["audio/wav", "audio/mpeg", "audio/flac"])
def test_random_bytes_claiming_a_self_contained_type_are_invalid(mime: str) -> None:
    """WAV, MP3 and FLAC chunks must each carry a header, so headerless bytes labelled so are rejected."""
    with pytest.raises(InvalidAudio, match="does not begin with"):
        inspect_chunk(NOISE, mime)


def test_random_bytes_claiming_webm_are_a_continuation() -> None:
    """Headerless bytes labelled WebM may be a continuation; they are judged when decoded."""
    assert inspect_chunk(NOISE, "audio/webm") == ChunkFormat("webm", False, False)


def test_bytes_win_over_a_wrong_mime_hint() -> None:
    """A WAV labelled audio/webm (a mislabelling client) is still a WAV."""
    assert inspect_chunk(read("phrase_16k_s16.wav"), "audio/webm").kind == "wav"


def _pcm16(n: int = 160) -> np.ndarray:
    return np.zeros(n, dtype="<i2")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (wav_bytes(_pcm16(), 16000, fmt_size=12), "fmt chunk is too short"),
        (wav_bytes(_pcm16(), 16000, encoding=6, bits=8), "A-law"),
        (wav_bytes(_pcm16(), 16000, encoding=2, bits=4), "ADPCM"),
        (wav_bytes(_pcm16(), 16000, bits=12), "12 bits"),
        (wav_bytes(_pcm16(), 100), "sample rate"),
        (wav_bytes(np.zeros((10, 0), dtype="<i2"), 16000), "0 channels"),
        (b"RIFF\x24\x00\x00\x00WAVE", "no fmt chunk"),
        (wav_bytes(_pcm16(), 16000)[:36], "no data chunk"),
        (b"RIFF\x24\x00\x00\x00WAVE\x00\x01\x02\x03" + bytes(40), "unreadable chunk id"),
    ],
)
def test_broken_wav_headers_are_invalid_audio(data: bytes, reason: str) -> None:
    """A WAV whose header cannot be decoded is rejected on arrival, saying why."""
    with pytest.raises(InvalidAudio, match=reason):
        inspect_chunk(data, "audio/wav")


@pytest.mark.parametrize("placeholder", [0, 0xFFFFFFFF, 10_000_000])
def test_wav_with_placeholder_or_oversized_data_size_is_accepted(placeholder: int) -> None:
    """Streaming writers leave the data size as 0, 0xFFFFFFFF or too large; the header still parses."""
    data = bytearray(wav_bytes(_pcm16(1600), 16000))
    data[40:44] = struct.pack("<I", placeholder)
    data[4:8] = struct.pack("<I", placeholder)
    assert inspect_chunk(bytes(data), "audio/wav") == ChunkFormat("wav", True, True)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (EBML_ID + b"\x9f" + bytes(5), "EBML header is truncated"),
        (EBML_ID + b"\x84" + b"\x42\x82\x81x", "does not declare a webm"),
        (struct.pack(">I", 9999) + b"ftypisom" + bytes(20), "impossible size"),
        (b"OggS\x00\x02" + bytes(20) + b"\x01\x08" + b"NotOpus!", "does not start with an Opus"),
        (b"fLaC\x81" + bytes(60), "STREAMINFO"),
        (b"ID3\x04\x00\x00\x80\x80\x80\x80" + bytes(20), "ID3 tag header is corrupt"),
    ],
)
def test_corrupt_stream_headers_are_invalid_audio(data: bytes, reason: str) -> None:
    """A chunk that begins like a container but whose header does not parse is rejected on arrival."""
    with pytest.raises(InvalidAudio, match=reason):
        inspect_chunk(data, None)


def test_ogg_continuation_page_does_not_start_a_stream() -> None:
    """An Ogg page without the beginning-of-stream flag is a continuation, though it begins with OggS."""
    data = read("phrase.ogg")
    header = stream_header(data, inspect_chunk(data, None))
    assert header is not None
    assert inspect_chunk(data[len(header) :], None) == ChunkFormat("ogg", False, False)


def test_webm_stream_header_is_everything_before_the_first_cluster() -> None:
    """The WebM header ends where the first Cluster begins, and its Segment size becomes 'unknown'."""
    first = chunks("webm_chunk_")[0]
    header = stream_header(first, inspect_chunk(first, None))
    assert header is not None
    assert len(header) == first.index(CLUSTER_ID)
    assert CLUSTER_ID not in header and b"OpusHead" in header
    assert b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff" in header


def test_ogg_stream_header_is_the_codec_header_pages() -> None:
    """The Ogg header holds OpusHead and OpusTags and no audio page."""
    data = read("phrase.ogg")
    header = stream_header(data, inspect_chunk(data, None))
    assert header is not None and b"OpusHead" in header and b"OpusTags" in header
    assert header.count(b"OggS") == 2


def test_fragmented_mp4_stream_header_is_the_init_segment() -> None:
    """For fragmented MP4 (Chromium's and ffmpeg's) the header is ftyp + moov; plain MP4 needs none."""
    first = chunks("mp4_chunk_")[0]
    assert stream_header(first, inspect_chunk(first, None)) == first
    init = read("fmp4_header.mp4")
    assert stream_header(init, inspect_chunk(init, None)) == init
    whole = read("phrase.m4a")
    assert stream_header(whole, inspect_chunk(whole, None)) is None


@pytest.mark.parametrize("name", ["phrase_16k_s16.wav", "phrase.mp3", "phrase.flac", "webm_chunk_001.webm"])
def test_self_contained_chunks_and_continuations_have_no_stream_header(name: str) -> None:
    """WAV, MP3 and FLAC need no header for later chunks, and a continuation carries none."""
    data = read(name)
    assert stream_header(data, inspect_chunk(data, None)) is None
