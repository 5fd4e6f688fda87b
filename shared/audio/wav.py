"""RIFF/WAVE header parsing and the pure-numpy sample conversion: the fast path for WAV chunks.

Streaming writers (browser AudioWorklet recorders, `ffmpeg -f wav pipe:`) leave the RIFF and data sizes as
placeholders (0 or 0xFFFFFFFF) or simply send less than they declared, so a short data chunk is never an
error: the data runs to the end of the bytes we have, cut to whole frames.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.errors import InvalidAudio

_PCM = 0x0001
_FLOAT = 0x0003
_EXTENSIBLE = 0xFFFE
_SUPPORTED = {(_PCM, 8), (_PCM, 16), (_PCM, 24), (_PCM, 32), (_FLOAT, 32), (_FLOAT, 64)}
_SEND_INSTEAD = "send 16-bit PCM WAV (16 kHz mono is cheapest), or WebM/Ogg Opus, MP3, FLAC or MP4"


@dataclass(frozen=True, slots=True)
class WavInfo:
    """What the fmt chunk says, and where the sample data is."""

    encoding: int  # 1 integer PCM, 3 IEEE float (WAVE_FORMAT_EXTENSIBLE resolved to its subformat)
    channels: int
    sample_rate: int
    bits: int
    data_offset: int
    data_length: int  # whole frames actually present, placeholders resolved


def is_wav(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] in (b"RIFF", b"RF64") and data[8:12] == b"WAVE"


def parse_wav_header(data: bytes) -> WavInfo:
    """Walk the RIFF chunks up to `data`; raise InvalidAudio with the reason when the header cannot work."""
    if not is_wav(data):
        raise InvalidAudio(f"not a WAV file: it does not begin with RIFF....WAVE; {_SEND_INSTEAD}")
    pos = 12
    fmt: tuple[int, int, int, int] | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = pos + 8
        if chunk_id == b"fmt ":
            fmt = _parse_fmt(data[body : body + size], size)
        elif chunk_id == b"data":
            if fmt is None:
                raise InvalidAudio(f"WAV data chunk comes before its fmt chunk; {_SEND_INSTEAD}")
            encoding, channels, rate, bits = fmt
            frame = channels * bits // 8
            available = len(data) - body
            # 0, 0xFFFFFFFF (RF64 / streaming placeholders) or a size past the end: use what is there.
            length = available if size in (0, 0xFFFFFFFF) or size > available else size
            return WavInfo(encoding, channels, rate, bits, body, length - length % frame)
        elif not chunk_id.isascii() or not chunk_id.strip(b" ").isalnum():
            raise InvalidAudio(f"WAV header is corrupt: unreadable chunk id {chunk_id!r}; {_SEND_INSTEAD}")
        pos = body + size + (size & 1)
    if fmt is None:
        raise InvalidAudio(f"WAV header is truncated or corrupt: no fmt chunk found; {_SEND_INSTEAD}")
    raise InvalidAudio(f"WAV header is truncated: no data chunk found; {_SEND_INSTEAD}")


def _parse_fmt(body: bytes, size: int) -> tuple[int, int, int, int]:
    if size < 16 or len(body) < 16:
        raise InvalidAudio(f"WAV fmt chunk is too short ({size} bytes, needs 16); {_SEND_INSTEAD}")
    encoding, channels, rate, _byte_rate, _align, bits = struct.unpack_from("<HHIIHH", body)
    if encoding == _EXTENSIBLE:
        if len(body) < 26:
            raise InvalidAudio(f"WAV extensible fmt chunk is truncated; {_SEND_INSTEAD}")
        (encoding,) = struct.unpack_from("<H", body, 24)
    if channels < 1 or channels > 64:
        raise InvalidAudio(f"WAV header declares {channels} channels; {_SEND_INSTEAD}")
    if rate < 1000 or rate > 768_000:
        raise InvalidAudio(f"WAV header declares an unusable sample rate of {rate} Hz; {_SEND_INSTEAD}")
    if (encoding, bits) not in _SUPPORTED:
        kind = {_PCM: "integer PCM", _FLOAT: "float", 6: "A-law", 7: "mu-law", 2: "MS ADPCM", 0x11: "IMA ADPCM"}
        name = kind.get(encoding, f"format tag 0x{encoding:04x}")
        raise InvalidAudio(
            f"WAV encoding {name} at {bits} bits is not supported (8/16/24/32-bit PCM or 32/64-bit float "
            f"are); {_SEND_INSTEAD}"
        )
    return encoding, channels, rate, bits


def wav_samples(data: bytes, info: WavInfo) -> npt.NDArray[np.float32]:
    """Sample data as float32 in [-1, 1], shape (frames, channels); a view-and-scale, no Python loop."""
    raw = memoryview(data)[info.data_offset : info.data_offset + info.data_length]
    out: npt.NDArray[np.float32]
    if info.encoding == _FLOAT:
        floats = np.frombuffer(raw, dtype="<f4" if info.bits == 32 else "<f8")
        # A corrupt float WAV holds NaN, infinities or values far past full scale, which would poison the level and
        # speech models (one NaN cut speech out of its utterance): they become silence and full scale.
        finite = np.nan_to_num(floats, nan=0.0, posinf=1.0, neginf=-1.0)
        out = np.clip(finite, -1.0, 1.0, out=finite).astype(np.float32, copy=False)
    elif info.bits == 16:
        out = np.frombuffer(raw, dtype="<i2").astype(np.float32) * np.float32(1 / 32768)
    elif info.bits == 8:  # unsigned, centred on 128
        out = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) * np.float32(1 / 128)
    elif info.bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] << 8) | (b[:, 1] << 16) | (b[:, 2] << 24)  # sign comes from the top byte
        out = ints.astype(np.float32) * np.float32(1 / 2**31)
    else:
        out = np.frombuffer(raw, dtype="<i4").astype(np.float32) * np.float32(1 / 2**31)
    return out.reshape(-1, info.channels)
