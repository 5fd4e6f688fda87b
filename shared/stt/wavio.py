"""16-bit PCM WAV encoding and decoding for the engines' float32 PCM (16 kHz mono)."""

from __future__ import annotations

import io
import wave

import numpy as np

from shared.stt.base import SAMPLE_RATE, Pcm

__all__ = ["pcm16_bytes", "pcm_from_wav_bytes", "wav_bytes", "wav_header"]


def pcm16_bytes(pcm: Pcm) -> bytes:
    """Mono float32 PCM in [-1, 1] as raw s16le samples (values outside the range are clipped)."""
    samples = np.asarray(pcm, dtype=np.float32).reshape(-1)
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def wav_bytes(pcm: Pcm, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Encode mono float32 PCM in [-1, 1] as a 16-bit PCM WAV file (values outside the range are clipped)."""
    samples = pcm16_bytes(pcm)
    return wav_header(sample_rate, len(samples)) + samples


def wav_header(sample_rate: int, data_bytes: int) -> bytes:
    """The 44-byte header of a 16-bit mono PCM WAV holding `data_bytes` of samples (raw s16le frames become WAV)."""
    return (
        b"RIFF" + (36 + data_bytes).to_bytes(4, "little") + b"WAVEfmt "
        + (16).to_bytes(4, "little") + (1).to_bytes(2, "little") + (1).to_bytes(2, "little")
        + sample_rate.to_bytes(4, "little") + (2 * sample_rate).to_bytes(4, "little")
        + (2).to_bytes(2, "little") + (16).to_bytes(2, "little")
        + b"data" + data_bytes.to_bytes(4, "little")
    )  # fmt: skip


def pcm_from_wav_bytes(data: bytes) -> tuple[Pcm, int]:
    """Decode a 16-bit PCM WAV (any channel count, averaged to mono) into float32 PCM and its sample rate."""
    with wave.open(io.BytesIO(data), "rb") as src:
        if src.getsampwidth() != 2:
            raise ValueError(f"expected 16-bit PCM WAV, got {8 * src.getsampwidth()}-bit")
        channels, rate = src.getnchannels(), src.getframerate()
        frames = src.readframes(src.getnframes())
    ints = np.frombuffer(frames, dtype="<i2")
    if channels > 1:
        ints = ints[: len(ints) - len(ints) % channels]
        samples = ints.reshape(-1, channels).astype(np.float32).mean(axis=1) / 32768.0
    else:
        samples = ints.astype(np.float32) / 32768.0
    return samples.astype(np.float32), rate
