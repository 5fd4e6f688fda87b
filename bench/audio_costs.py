"""Per-chunk costs of the audio path, on the committed fixtures: `python bench/audio_costs.py`.

Prints the median of many runs per operation (one core; numbers vary with machine load).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from shared.audio.decode import StreamDecoder, decode_chunk
from shared.audio.formats import inspect_chunk, stream_header
from shared.audio.levels import block_gains
from shared.audio.vad import VadTrack, shared_detector
from shared.stt.base import SAMPLE_RATE

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "audio"


def median_ms(fn: Callable[[], object], repeat: int = 50) -> float:
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def wav_2s(rate: int, channels: int, dtype: str, encoding: int) -> bytes:
    """2 s of a tone as WAV bytes in the given sample format."""
    import struct

    t = np.arange(2 * rate) / rate
    samples = np.repeat((0.3 * np.sin(2 * np.pi * 440 * t))[:, None], channels, axis=1)
    raw = (samples * 32767).astype(dtype) if dtype == "<i2" else samples.astype(dtype)
    bits = raw.dtype.itemsize * 8
    fmt = struct.pack("<HHIIHH", encoding, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    body = b"WAVEfmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", raw.nbytes) + raw.tobytes()
    return b"RIFF" + struct.pack("<I", len(body)) + body


def row(label: str, ms: float) -> None:
    print(f"{label:58s} {ms:8.3f} ms")


def main() -> None:
    wav16 = wav_2s(16000, 1, "<i2", 1)
    wav48 = wav_2s(48000, 1, "<f4", 3)
    wav44 = wav_2s(44100, 2, "<i2", 1)
    row("inspect_chunk, 2 s WAV", median_ms(lambda: inspect_chunk(wav16, "audio/wav"), 500))
    fmt16 = inspect_chunk(wav16, None)
    row("decode WAV 16 kHz mono int16, 2 s (fast path)", median_ms(lambda: decode_chunk(wav16, fmt16), 500))
    row("decode WAV 48 kHz mono float32, 2 s (resampled)", median_ms(lambda: decode_chunk(wav48, fmt16)))
    row("decode WAV 44.1 kHz stereo int16, 2 s (resampled)", median_ms(lambda: decode_chunk(wav44, fmt16)))

    for prefix, label in (("webm_chunk_", "WebM/Opus"), ("mp4_chunk_", "MP4/Opus")):
        parts = [p.read_bytes() for p in sorted(FIXTURES.glob(f"{prefix}*"))]
        header = stream_header(parts[0], inspect_chunk(parts[0], None))
        later = [(p, inspect_chunk(p, None)) for p in parts[1:4]]
        row(
            f"decode {label} MediaRecorder continuation, ~1 s blob",
            statistics.mean(median_ms(lambda p=p, f=f, h=header: decode_chunk(p, f, h)) for p, f in later),
        )

    def stream_all() -> None:
        decoder = StreamDecoder()
        for p in parts_webm:
            decoder.decode(p)

    parts_webm = [p.read_bytes() for p in sorted(FIXTURES.glob("webm_chunk_*"))]
    row("StreamDecoder, WebM, per ~1 s blob", median_ms(stream_all, 20) / len(parts_webm))
    for name in ("phrase.mp3", "phrase.flac", "phrase.m4a", "phrase.ogg", "phrase.webm"):
        data = (FIXTURES / name).read_bytes()
        fmt = inspect_chunk(data, None)
        row(f"decode {name} (whole file, 2.25 s)", median_ms(lambda d=data, f=fmt: decode_chunk(d, f)))

    speech = decode_chunk((FIXTURES / "phrase_16k_s16.wav").read_bytes(), fmt16)
    buffer = np.tile(np.concatenate([speech, np.zeros(SAMPLE_RATE // 2, dtype=np.float32)]), 6)[: 16 * SAMPLE_RATE]
    chunk = 2 * SAMPLE_RATE
    row("block_gains (digital silence + gain curve), 2 s", median_ms(lambda: block_gains(buffer[:chunk]), 500))
    detector = shared_detector()
    detector.warm_up()

    def incremental() -> None:
        track = VadTrack(detector)
        for start in range(0, buffer.size, chunk):
            track.extend(buffer[start : start + chunk])

    def whole_each_time() -> None:
        for end in range(chunk, buffer.size + 1, chunk):
            detector.probabilities(buffer[:end])

    steps = buffer.size // chunk
    row("Silero VadTrack.extend per 2 s chunk (incremental)", median_ms(incremental, 10) / steps)
    row("Silero over the whole pending buffer per 2 s chunk (to 16 s)", median_ms(whole_each_time, 10) / steps)

    # Detection as the live path runs it on every chunk (levels, then Silero at the common peak), per input level:
    # the cost must not depend on how loud the microphone is.
    from functions.process_audio.buffer import SpeakerBuffer

    peak = float(np.max(np.abs(buffer)))
    for dbfs in (-3, -30, -45, -55):
        scaled = (buffer * (10 ** (dbfs / 20) / peak)).astype(np.float32)

        def live_detection(audio: np.ndarray = scaled) -> None:
            speaker = SpeakerBuffer(detector)
            for sequence, start in enumerate(range(0, audio.size, chunk)):
                speaker.append(sequence, audio[start : start + chunk])

        row(
            f"detection per 2 s speech chunk as the live path runs it, peak {dbfs} dBFS",
            median_ms(live_detection, 10) / steps,
        )


if __name__ == "__main__":
    main()
