"""Fixture access for the audio tests: committed files made by scripts/make_audio_fixtures.sh."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from shared.audio.decode import decode_chunk
from shared.audio.formats import inspect_chunk
from shared.stt.base import Pcm

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "audio"
PHRASE_SECONDS = 2.247  # phrase_16k_s16.wav; every encoding of the phrase is checked against it


def read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def chunks(prefix: str) -> list[bytes]:
    """Blobs in recording order, e.g. chunks("webm_chunk_") for the real Chromium MediaRecorder output."""
    return [p.read_bytes() for p in sorted(FIXTURES.glob(f"{prefix}*"))]


def decode_file(name: str) -> Pcm:
    data = read(name)
    return decode_chunk(data, inspect_chunk(data, None))


def wav_bytes(samples: np.ndarray, rate: int, *, encoding: int = 1, bits: int = 16, fmt_size: int = 16) -> bytes:
    """A canonical WAV around raw sample bytes (shape (frames, channels) or (frames,)), for header cases."""
    channels = 1 if samples.ndim == 1 else samples.shape[1]
    payload = samples.tobytes()
    fmt = struct.pack("<HHIIHH", encoding, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    fmt = fmt.ljust(fmt_size, b"\0")[:fmt_size] if fmt_size >= 16 else fmt[:fmt_size]
    body = b"WAVE" + b"fmt " + struct.pack("<I", fmt_size) + fmt + b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


def tone(seconds: float, rate: int = 16_000, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float64)
