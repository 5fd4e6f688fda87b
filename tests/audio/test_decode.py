"""decode_chunk and StreamDecoder: every format to 16 kHz mono float32, continuation chunks included."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from shared.audio.decode import StreamDecoder, decode_chunk
from shared.audio.formats import ChunkFormat, inspect_chunk, stream_header
from shared.audio.levels import rms_dbfs
from shared.errors import InvalidAudio
from shared.stt.base import SAMPLE_RATE
from tests.audio.support import PHRASE_SECONDS, chunks, decode_file, read, tone, wav_bytes

TOLERANCE_S = 0.05


def seconds(pcm: np.ndarray) -> float:
    return pcm.size / SAMPLE_RATE


def whole_stream(parts: list[bytes]) -> np.ndarray:
    joined = b"".join(parts)
    return decode_chunk(joined, inspect_chunk(joined, None))


def decode_chunked(parts: list[bytes]) -> list[np.ndarray]:
    """Decode like the live path: the first chunk alone, every later one with the first chunk's header."""
    first = inspect_chunk(parts[0], None)
    header = stream_header(parts[0], first)
    return [decode_chunk(parts[0], first)] + [decode_chunk(p, inspect_chunk(p, None), header) for p in parts[1:]]


@pytest.mark.parametrize(
    ("name", "duration"),
    [
        ("phrase_16k_s16.wav", PHRASE_SECONDS),
        ("phrase_44k1_stereo_s16.wav", 0.6),
        ("phrase_48k_f32.wav", 0.6),
        ("phrase_placeholder_size.wav", 1.0),
        ("phrase.webm", PHRASE_SECONDS),
        ("phrase.ogg", PHRASE_SECONDS),
        ("phrase.mp3", PHRASE_SECONDS),
        ("phrase.flac", PHRASE_SECONDS),
        ("phrase.m4a", PHRASE_SECONDS),
    ],
)
def test_each_format_decodes_to_16k_mono_with_its_duration(name: str, duration: float) -> None:
    """Each encoding of the phrase decodes to 1-D float32 at 16 kHz, the right length, with speech energy."""
    pcm = decode_file(name)
    assert pcm.dtype == np.float32 and pcm.ndim == 1
    assert abs(seconds(pcm) - duration) <= TOLERANCE_S
    assert rms_dbfs(pcm) > -30.0
    assert np.abs(pcm).max() <= 1.0


@pytest.mark.parametrize(
    ("name", "max_lag"),
    [("phrase_44k1_stereo_s16.wav", 2), ("phrase_48k_f32.wav", 2), ("phrase.flac", 0), ("phrase.webm", 80)],
)
def test_resampled_and_encoded_audio_matches_the_16k_original(name: str, max_lag: int) -> None:
    """Resampling, downmixing and lossy coding keep the waveform: level within 1.5 dB, shape correlated."""
    reference = decode_file("phrase_16k_s16.wav")
    pcm = decode_file(name)
    n = min(pcm.size, reference.size) - 200
    best = max(
        (float(np.corrcoef(pcm[100 + lag : 100 + lag + n - 200], reference[100 : n - 100])[0, 1]), lag)
        for lag in range(-100, 101)
    )
    assert best[0] > 0.9, best
    assert abs(best[1]) <= max_lag  # resampler delay is compensated; Opus keeps a few ms of its own
    assert abs(rms_dbfs(pcm[:n]) - rms_dbfs(reference[:n])) < 1.5


@pytest.mark.parametrize(
    ("dtype", "bits", "encoding", "scale"),
    [
        (np.uint8, 8, 1, None),
        ("<i2", 16, 1, 32767),
        ("<i4", 32, 1, 2**31 - 1),
        ("<f4", 32, 3, 1.0),
        ("<f8", 64, 3, 1.0),
    ],
)
def test_wav_sample_encodings_decode_to_the_same_tone(
    dtype: str, bits: int, encoding: int, scale: float | None
) -> None:
    """8/16/32-bit integer and 32/64-bit float WAV all decode to the same 440 Hz tone at half scale."""
    wave = tone(0.5)
    raw = np.round(wave * 127 + 128).astype(np.uint8) if scale is None else (wave * scale).astype(dtype)
    pcm = decode_chunk(wav_bytes(raw, 16000, encoding=encoding, bits=bits), ChunkFormat("wav", True, True))
    assert pcm.size == 8000
    assert np.allclose(pcm, wave, atol=0.01)


def test_24bit_stereo_wav_is_averaged_to_mono() -> None:
    """24-bit little-endian PCM decodes with its sign, and channels are averaged."""
    left, right = tone(0.25, amplitude=0.5), tone(0.25, amplitude=0.1)
    ints = np.round(np.stack([left, right], axis=1) * (2**23 - 1)).astype("<i4")
    packed = ints.view(np.uint8).reshape(-1, 2, 4)[:, :, :3].copy()
    data = wav_bytes(packed.reshape(-1, 6), 16000, bits=24)
    data = data[:22] + (2).to_bytes(2, "little") + data[24:]  # two channels: packed rows hold both
    pcm = decode_chunk(data, inspect_chunk(data, "audio/wav"))
    assert np.allclose(pcm, (left + right) / 2, atol=1e-4)


def test_wav_at_8khz_is_resampled_to_16khz() -> None:
    """Any input rate comes out at 16 kHz with its duration kept."""
    data = wav_bytes((tone(1.0, rate=8000, freq=300) * 30000).astype("<i2"), 8000)
    pcm = decode_chunk(data, inspect_chunk(data, None))
    assert pcm.size == SAMPLE_RATE
    assert abs(rms_dbfs(pcm) - rms_dbfs(tone(1.0).astype(np.float32) * 30000 / 32768)) < 0.5


def test_placeholder_size_wav_decodes_what_is_there() -> None:
    """A WAV claiming 4 GB of data decodes the data actually sent, cut to whole frames."""
    data = read("phrase_placeholder_size.wav")
    assert seconds(decode_chunk(data + b"\x01", inspect_chunk(data, "audio/wav"))) == 1.0


@pytest.mark.parametrize(("prefix", "count"), [("webm_chunk_", 5), ("mp4_chunk_", 5)])
def test_mediarecorder_continuations_decode_with_the_first_chunks_header(prefix: str, count: int) -> None:
    """Every real Chromium MediaRecorder blob decodes with the first blob's header, and together they give
    the whole recording's duration."""
    parts = chunks(prefix)
    assert len(parts) == count
    pcm = decode_chunked(parts)
    full = whole_stream(parts)
    assert seconds(full) > 4.0
    assert all(seconds(p) > 0.2 for p in pcm[1:])
    assert abs(sum(p.size for p in pcm) - full.size) / SAMPLE_RATE <= TOLERANCE_S


def test_mediarecorder_webm_chunks_match_the_whole_stream_sample_for_sample() -> None:
    """Joined WebM continuation PCM lines up with the whole-stream decode (only Opus restarts differ)."""
    parts = chunks("webm_chunk_")
    joined = np.concatenate(decode_chunked(parts))
    full = whole_stream(parts)
    n = min(joined.size, full.size)
    assert np.corrcoef(joined[:n], full[:n])[0, 1] > 0.95


def test_ffmpeg_fragmented_mp4_fragments_decode_with_the_init_segment() -> None:
    """Safari-style fragmented MP4 (AAC): each fragment decodes with the init segment, durations add up."""
    parts = [read("fmp4_header.mp4"), *chunks("fmp4_frag_")]
    pcm = decode_chunked(parts)
    assert abs(sum(p.size for p in pcm) - whole_stream(parts).size) / SAMPLE_RATE <= TOLERANCE_S
    assert abs(seconds(np.concatenate(pcm)) - PHRASE_SECONDS) < 0.15  # plus AAC priming and padding


def test_ogg_pages_decode_as_continuations() -> None:
    """Ogg audio pages after the header pages decode with the header, in two arbitrary groups of pages."""
    data = read("phrase.ogg")
    header = stream_header(data, inspect_chunk(data, None))
    assert header is not None
    rest = data[len(header) :]
    cut = rest.index(b"OggS", len(rest) // 2)
    first = decode_chunk(rest[:cut], inspect_chunk(rest[:cut], "audio/ogg"), header)
    second = decode_chunk(rest[cut:], inspect_chunk(rest[cut:], None), header)
    assert first.size > 0 and second.size > 0
    assert abs(seconds(first) + seconds(second) - PHRASE_SECONDS) <= TOLERANCE_S


def test_webm_split_at_arbitrary_bytes_decodes_stateless_with_small_losses() -> None:
    """Blobs cut mid-element still decode on their own: at most a few 20 ms frames are lost per cut."""
    data = read("phrase.webm")
    cuts = [0, 1500, 3001, 4702, len(data)]
    pcm = decode_chunked([data[a:b] for a, b in itertools.pairwise(cuts)])
    assert all(p.size > 0 for p in pcm)
    assert PHRASE_SECONDS - 0.25 < seconds(np.concatenate(pcm)) <= PHRASE_SECONDS + TOLERANCE_S


def test_stream_decoder_joins_blobs_split_anywhere_exactly() -> None:
    """StreamDecoder carries a cut element into the next blob, so arbitrary cuts lose nothing."""
    data = read("phrase.webm")
    cuts = [0, 1500, 3001, 4702, len(data)]
    decoder = StreamDecoder()
    pcm = [decoder.decode(data[a:b]) for a, b in itertools.pairwise(cuts)]
    assert abs(seconds(np.concatenate(pcm)) - seconds(decode_file("phrase.webm"))) <= TOLERANCE_S


def test_stream_decoder_matches_stateless_decoding_of_mediarecorder_blobs() -> None:
    """On real Chromium blobs the cache gives the same samples as header + chunk per call."""
    parts = chunks("webm_chunk_")
    decoder = StreamDecoder()
    cached = [decoder.decode(p) for p in parts]
    assert decoder.header == stream_header(parts[0], inspect_chunk(parts[0], None))
    for a, b in zip(cached, decode_chunked(parts), strict=True):
        assert np.array_equal(a, b)


def test_stream_decoder_rebuilt_from_a_stored_header_continues_the_stream() -> None:
    """A decoder built on another process from the stored header decodes the next chunk the same way."""
    parts = chunks("webm_chunk_")
    header = stream_header(parts[0], inspect_chunk(parts[0], None))
    rebuilt = StreamDecoder(header)
    pcm = rebuilt.decode(parts[3], inspect_chunk(parts[3], "audio/webm"))
    assert np.array_equal(pcm, decode_chunked(parts)[3])


@pytest.mark.parametrize("name", ["webm_chunk_002.webm", "mp4_chunk_002.mp4", "fmp4_frag_001.m4s"])
def test_continuation_without_a_header_is_invalid_audio(name: str) -> None:
    """A continuation chunk decoded with no stream header raises InvalidAudio naming the fix."""
    data = read(name)
    with pytest.raises(InvalidAudio, match="first chunk"):
        decode_chunk(data, inspect_chunk(data, None), None)


def test_non_audio_bytes_with_a_header_are_invalid_audio() -> None:
    """Random bytes passed off as a WebM continuation fail to decode with InvalidAudio."""
    parts = chunks("webm_chunk_")
    header = stream_header(parts[0], inspect_chunk(parts[0], None))
    garbage = np.random.default_rng(3).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidAudio):
        decode_chunk(garbage, inspect_chunk(garbage, "audio/webm"), header)


@pytest.mark.parametrize(
    ("data", "fmt"),
    [
        (b"\xff\xfb\x90\x00" + bytes(500), ChunkFormat("mp3", True, True)),
        (b"fLaC" + bytes(600), ChunkFormat("flac", True, True)),
        (b"\x1a\x45\xdf\xa3" + bytes(300), ChunkFormat("webm", True, True)),
        (b"OggS" + bytes(300), ChunkFormat("ogg", True, True)),
        (b"\x00\x00\x00\x20ftypisom" + bytes(300), ChunkFormat("mp4", True, True)),
    ],
)
def test_malformed_self_contained_chunks_are_invalid_audio(data: bytes, fmt: ChunkFormat) -> None:
    """Bytes that only look like a container fail to decode with InvalidAudio, never another error."""
    with pytest.raises(InvalidAudio):
        decode_chunk(data, fmt)


def test_a_truncated_mp3_keeps_the_frames_it_has() -> None:
    """A chunk cut mid-frame decodes the whole frames before the cut."""
    data = read("phrase.mp3")
    pcm = decode_chunk(data[: len(data) // 2], inspect_chunk(data, None))
    assert 0.7 < seconds(pcm) < 1.5


def test_empty_chunk_decodes_to_no_samples() -> None:
    """An empty blob (Safari emits them) is an empty float32 array, whatever its format says."""
    pcm = decode_chunk(b"", ChunkFormat(None, False, False))
    assert pcm.dtype == np.float32 and pcm.size == 0
