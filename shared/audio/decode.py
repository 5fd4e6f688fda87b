"""Chunk bytes -> 16 kHz mono float32 PCM.

WAV takes a pure-numpy path; everything else goes through PyAV with the demuxer named (no probing).
Continuation chunks (MediaRecorder blobs after the first) decode as `stream header + chunk`, repaired so the
joint is a valid file (see `shared.audio.webm`).

Measured per chunk on one shared core (bench/audio_costs.py; medians, they move with machine load):
- inspect_chunk: ~0.004 ms; WAV 16 kHz mono int16, 2 s: ~0.03 ms (a frombuffer and a scale);
- WAV 44.1/48 kHz or stereo, 2 s: ~3-4 ms, almost all of it libswresample;
- WebM/Opus continuation (real Chromium ~1 s blobs): ~5-6 ms; Chromium MP4/Opus fragments ~8 ms;
- whole 2.25 s files: MP3, FLAC, M4A ~4 ms; Ogg/WebM Opus ~10 ms (Opus decodes at 48 kHz, then resampling).
Everything except the WAV fast path belongs off the event loop (`anyio.to_thread.run_sync`).
"""

from __future__ import annotations

import io

import av
import numpy as np
from av.codec.context import Flags2

from shared.audio import ogg, webm
from shared.audio.formats import AudioKind, ChunkFormat, inspect_chunk, stream_header
from shared.audio.wav import is_wav, parse_wav_header, wav_samples
from shared.errors import InvalidAudio
from shared.stt.base import SAMPLE_RATE, Pcm

_DEMUXERS: dict[AudioKind, str] = {
    "wav": "wav",
    "webm": "matroska",
    "ogg": "ogg",
    "mp3": "mp3",
    "flac": "flac",
    "mp4": "mp4",
}
_NO_HEADER = (
    "this is a continuation chunk (no container header) and its stream's first chunk has not been seen; "
    "send the stream's first chunk (it begins with the WebM/Ogg/MP4 header) first, or send WAV"
)


def empty_pcm() -> Pcm:
    return np.zeros(0, dtype=np.float32)


def decode_chunk(data: bytes, fmt: ChunkFormat, header: bytes | None = None) -> Pcm:
    """Decode one chunk to 16 kHz mono float32. `header` is the stream header (`stream_header` of the
    stream's first chunk) and is only used for continuation chunks. Raises InvalidAudio."""
    if not data:
        return empty_pcm()
    if fmt.kind == "wav" and is_wav(data):
        return decode_wav(data)
    if fmt.self_contained or fmt.starts_stream:
        if fmt.kind is None:
            raise InvalidAudio("chunk format is unknown; send a mime_type or a chunk with a container header")
        if fmt.kind == "webm":
            data = data[: len(data) - len(webm.incomplete_tail(data))]
        return _decode_container(data, fmt.kind, continuation=False)
    if header is None:
        raise InvalidAudio(_NO_HEADER)
    kind = inspect_chunk(header, None).kind
    if kind is None or (fmt.kind is not None and fmt.kind != kind):
        raise InvalidAudio(
            f"the stored stream header is {kind or 'not a known container'} but this chunk is "
            f"{fmt.kind}; start a new stream with a chunk that carries its header"
        )
    return _decode_container(join_continuation(header, data, kind), kind, continuation=True)


def join_continuation(header: bytes, data: bytes, kind: AudioKind) -> bytes:
    """`header + data`, made decodable: for WebM a synthetic Cluster where the blob starts mid-cluster and
    its partial elements cut; for Ogg only whole pages; MP4 fragments are appended as they are."""
    if kind == "webm":
        body = webm.continuation_body(data)
        if body is None:
            raise InvalidAudio("WebM continuation chunk holds no whole Matroska element; it is not WebM audio")
        return header + body
    if kind == "ogg":
        start, end = ogg.whole_pages_span(data)
        if end <= start:
            raise InvalidAudio("Ogg continuation chunk holds no whole Ogg page")
        return header + data[start:end]
    if kind == "mp4":
        return header + data
    raise InvalidAudio(f"{kind} chunks are self-contained and cannot continue a stream")


def decode_wav(data: bytes) -> Pcm:
    """The fast path: parse the header, view the samples, average channels, resample only if needed."""
    info = parse_wav_header(data)
    samples = wav_samples(data, info)
    mono = samples[:, 0] if info.channels == 1 else samples.mean(axis=1, dtype=np.float32)
    if info.sample_rate != SAMPLE_RATE:
        return resample(mono, info.sample_rate)
    return np.array(mono, dtype=np.float32)  # own, writable, contiguous


def resample(mono: Pcm, rate: int) -> Pcm:
    """Band-limited resampling with libswresample (PyAV); its filter delay is compensated, so the output is
    time-aligned and exactly len * 16000 / rate long. ~1 ms per second of 48 kHz input."""
    if rate == SAMPLE_RATE or mono.size == 0:
        return np.array(mono, dtype=np.float32)
    frame = av.AudioFrame.from_ndarray(
        np.ascontiguousarray(mono, dtype=np.float32)[None, :], format="flt", layout="mono"
    )
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    return _collect([*resampler.resample(frame), *resampler.resample(None)])


def _collect(frames: list[av.AudioFrame]) -> Pcm:
    if not frames:
        return empty_pcm()
    return np.concatenate([f.to_ndarray().reshape(-1) for f in frames]).astype(np.float32, copy=False)


def _decode_container(data: bytes, kind: AudioKind, *, continuation: bool) -> Pcm:
    try:
        container = av.open(io.BytesIO(data), mode="r", format=_DEMUXERS[kind])
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise InvalidAudio(f"{kind} audio could not be opened ({exc}); the bytes are not valid {kind}") from exc
    frames: list[av.AudioFrame] = []
    error: Exception | None = None
    with container:
        if not container.streams.audio:
            raise InvalidAudio(f"{kind} data has no audio track; send audio")
        stream = container.streams.audio[0]
        if stream.codec_context is None:  # a corrupt header can name a codec FFmpeg has no decoder for
            raise InvalidAudio(f"the {kind} audio track's codec cannot be decoded; it is corrupt or not {kind} audio")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        first = True
        try:
            for packet in container.demux(stream):
                if first and packet.size:
                    first = False
                    if continuation and (packet.pts is None or packet.pts > 0):
                        # The codec's pre-skip (Opus pre_skip, 80 ms in Chromium's MP4) belongs to the start
                        # of the stream; mid-stream it would cut real audio out of every chunk.
                        stream.codec_context.flags2 |= Flags2.skip_manual
                for frame in packet.decode():
                    frame.pts = None  # chunks restart timestamps; we only want the samples in order
                    frames.extend(resampler.resample(frame))
        except (av.FFmpegError, ValueError) as exc:
            error = exc  # a chunk cut mid-packet ends in an error; keep what decoded before it
        frames.extend(resampler.resample(None))
        # A plain MP4 states its true length (edit list), yet FFmpeg 5 still outputs the AAC encoder's end
        # padding (~60 ms); fragmented MP4 is left alone so that a whole stream and its chunks agree.
        plain_mp4 = kind == "mp4" and not continuation and b"mvex" not in data[:4096]
        limit = _declared_samples(stream) if plain_mp4 else None
    if not frames and (error is not None or kind in ("wav", "mp3", "flac")):
        reason = f" ({error})" if error else ""
        raise InvalidAudio(f"no audio could be decoded from this {kind} chunk{reason}; it is corrupt or not {kind}")
    pcm = _collect(frames)
    return pcm[:limit] if limit is not None else pcm


def _declared_samples(stream: av.audio.stream.AudioStream) -> int | None:
    if stream.duration is None or stream.time_base is None:
        return None
    return round(float(stream.duration * stream.time_base) * SAMPLE_RATE)


class StreamDecoder:
    """Decodes one speaker's chunks in sequence order, carrying the partial element a blob ends with into
    the next blob, so blobs split anywhere (not only where Chromium splits) join byte-exactly.

    A pure cache: `StreamDecoder(stored_header)` fed the pending chunks in order rebuilds it on any
    process. Not thread-safe; keep one per speaker stream and feed it from one task at a time.
    """

    def __init__(self, header: bytes | None = None) -> None:
        self._header = header
        self._carry = b""

    @property
    def header(self) -> bytes | None:
        return self._header

    def decode(self, data: bytes, fmt: ChunkFormat | None = None) -> Pcm:
        """Decode the next chunk of this stream (a stream-starting chunk resets the stored header)."""
        fmt = fmt or inspect_chunk(data, None)
        if fmt.starts_stream:
            self._header = stream_header(data, fmt) if fmt.kind in ("webm", "ogg", "mp4") else None
            self._carry = webm.incomplete_tail(data) if fmt.kind == "webm" else b""
            return decode_chunk(data, fmt)
        if self._header is None or not data:
            return decode_chunk(data, fmt, self._header)
        kind = inspect_chunk(self._header, None).kind
        joined = self._carry + data
        if kind == "webm":
            self._carry = webm.incomplete_tail(joined)
        elif kind == "ogg":
            self._carry = joined[ogg.whole_pages_span(joined)[1] :] if ogg.CAPTURE in joined else b""
        return decode_chunk(joined, fmt, self._header)
