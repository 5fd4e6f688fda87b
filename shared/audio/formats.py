"""The cheap on-arrival check: which container a chunk is, whether it starts a stream, whether it parses.

No PyAV here: this runs on the request path for every chunk (microseconds), so it only reads magic bytes and
the headers of self-contained formats. Decoding happens later, in `shared.audio.decode`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Literal

from shared.audio import ogg, wav, webm
from shared.errors import InvalidAudio

AudioKind = Literal["wav", "webm", "ogg", "mp3", "flac", "mp4"]

_MIME_KINDS: dict[str, AudioKind] = {
    "audio/wav": "wav",
    "audio/x-wav": "wav",
    "audio/wave": "wav",
    "audio/vnd.wave": "wav",
    "audio/webm": "webm",
    "video/webm": "webm",
    "audio/ogg": "ogg",
    "audio/opus": "ogg",
    "application/ogg": "ogg",
    "audio/mpeg": "mp3",
    "audio/mp3": "mp3",
    "audio/mpeg3": "mp3",
    "audio/flac": "flac",
    "audio/x-flac": "flac",
    "audio/mp4": "mp4",
    "audio/m4a": "mp4",
    "audio/x-m4a": "mp4",
    "video/mp4": "mp4",
}
_SELF_CONTAINED_KINDS = ("wav", "mp3", "flac")
_ACCEPTED = "audio/wav, audio/webm, audio/ogg, audio/mpeg, audio/flac or audio/mp4 (a codecs parameter is fine)"
_MP4_FRAGMENT_BOXES = (b"moof", b"styp", b"sidx", b"mdat", b"emsg", b"prft")
_OGG_CODECS = (b"OpusHead", b"\x01vorbis", b"\x7fFLAC", b"Speex   ")


@dataclass(frozen=True, slots=True)
class ChunkFormat:
    """What the first bytes (and the mime hint) say. `kind` is None for a continuation with no hint."""

    kind: AudioKind | None
    starts_stream: bool  # begins with a container header: replaces the speaker's stored stream header
    self_contained: bool  # decodable on its own, without a stored header


def kind_for_mime(mime_type: str | None) -> AudioKind | None:
    """Map a Content-Type-style mime (parameters ignored, any case) to a kind; InvalidAudio if we don't decode it."""
    if mime_type is None or not mime_type.strip():
        return None
    base = mime_type.split(";", 1)[0].strip().lower()
    kind = _MIME_KINDS.get(base)
    if kind is None:
        hint = " (raw ADTS AAC is not accepted: send AAC in MP4 as audio/mp4)" if base == "audio/aac" else ""
        raise InvalidAudio(f"mime_type {mime_type!r} is not an audio type the bridge decodes{hint}; send {_ACCEPTED}")
    return kind


def inspect_chunk(data: bytes, mime_type: str | None) -> ChunkFormat:
    """Classify a chunk from its magic bytes, checking the header of anything self-contained.

    Bytes win over the mime hint when they carry a strong signature (browsers mislabel). Bytes with no
    recognisable header are a continuation chunk, unless the mime names a format whose every chunk must be
    self-contained (WAV, MP3, FLAC): then they are InvalidAudio at once.
    """
    hint = kind_for_mime(mime_type)
    head = data[:12]
    if head[:4] in (b"RIFF", b"RF64"):
        wav.parse_wav_header(data)  # raises with the reason
        return ChunkFormat("wav", True, True)
    if head.startswith(webm.EBML_ID):
        _check_ebml(data)
        return ChunkFormat("webm", True, True)
    if head[4:8] == b"ftyp":
        _check_ftyp(data)
        return ChunkFormat("mp4", True, True)
    if head.startswith(b"OggS"):
        if _check_ogg_page(data):
            return ChunkFormat("ogg", True, True)
        return ChunkFormat("ogg", False, False)
    if head.startswith(b"fLaC"):
        _check_flac(data)
        return ChunkFormat("flac", True, True)
    if head.startswith(b"ID3"):
        _check_id3(data)
        return ChunkFormat("mp3", True, True)
    if hint in (None, "mp3") and _looks_like_mp3(data):
        return ChunkFormat("mp3", True, True)
    if hint in (None, "mp4") and head[4:8] in _MP4_FRAGMENT_BOXES:
        return ChunkFormat("mp4", False, False)
    if hint in (None, "webm") and head.startswith(webm.CLUSTER_ID):
        return ChunkFormat("webm", False, False)
    if hint in _SELF_CONTAINED_KINDS:
        raise InvalidAudio(
            f"chunk is labelled {mime_type!r} but does not begin with a {str(hint).upper()} header "
            f"({head[:4].hex()}...); send the whole file, or a stream's first chunk before its continuations"
        )
    return ChunkFormat(hint, False, False)


def stream_header(data: bytes, fmt: ChunkFormat) -> bytes | None:
    """The bytes later continuation chunks of this stream need in front of them, or None when every chunk
    is self-contained (WAV, MP3, FLAC) or this chunk does not start a stream."""
    if not fmt.starts_stream:
        return None
    if fmt.kind == "webm":
        return webm.stream_header(data)
    if fmt.kind == "ogg":
        return ogg.header_pages(data)
    if fmt.kind == "mp4":
        return _mp4_init_segment(data)
    return None


def _bad(what: str) -> InvalidAudio:
    return InvalidAudio(f"{what}; send a complete, uncorrupted first chunk or a whole file ({_ACCEPTED})")


def _check_ebml(data: bytes) -> None:
    el = webm.read_size(data, 4)
    if el is None or el[0] is None or 4 + el[1] + el[0] > len(data):
        raise _bad("WebM EBML header is truncated or corrupt")
    body = data[4 + el[1] : 4 + el[1] + el[0]]
    if b"\x42\x82" not in body or not (b"webm" in body or b"matroska" in body):
        raise _bad("EBML header does not declare a webm or matroska document")


def _check_ftyp(data: bytes) -> None:
    (size,) = struct.unpack_from(">I", data)
    if size < 16 or size > 4096 or size > len(data):
        raise _bad(f"MP4 ftyp box has an impossible size ({size} bytes)")
    if not data[8:12].isascii():
        raise _bad("MP4 ftyp box has an unreadable major brand")


def _check_ogg_page(data: bytes) -> bool:
    """True for a beginning-of-stream page of a codec we decode; False for a continuation page."""
    if len(data) < 28 or data[4] != 0:
        raise _bad("Ogg page header is truncated or has an unknown version")
    if not data[5] & 0x02:
        return False
    body = 27 + data[26]
    if not any(data.startswith(codec, body) for codec in _OGG_CODECS):
        raise _bad("Ogg stream does not start with an Opus, Vorbis, FLAC or Speex header")
    return True


def _mp4_init_segment(data: bytes) -> bytes | None:
    """ftyp + moov of a fragmented MP4 (moov holds an mvex); None for a plain, self-contained MP4."""
    pos = 0
    while pos + 8 <= len(data):
        size, box = struct.unpack_from(">I4s", data, pos)
        if box in (b"moof", b"mdat") or size < 8:
            break
        pos += size
    init = data[: min(pos, len(data))]
    return init if b"mvex" in init else None


def _check_flac(data: bytes) -> None:
    # The first metadata block must be STREAMINFO (type 0, 34 bytes) with a sample rate and channel count.
    if len(data) < 42 or data[4] & 0x7F != 0 or int.from_bytes(data[5:8], "big") != 34:
        raise _bad("FLAC stream does not start with a STREAMINFO block")
    rate = int.from_bytes(data[18:21], "big") >> 4
    if rate == 0:
        raise _bad("FLAC STREAMINFO declares a sample rate of 0")


def _check_id3(data: bytes) -> None:
    if len(data) < 10 or data[3] == 0xFF or data[4] == 0xFF or any(b >= 0x80 for b in data[6:10]):
        raise _bad("MP3 ID3 tag header is corrupt")


_MP3_BITRATES_V1_L3 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MP3_BITRATES_V2_L3 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mp3_frame_length(data: bytes, pos: int) -> int | None:
    """Length of the MPEG-1/2/2.5 Layer III frame whose header is at pos, or None if it is not one."""
    if pos + 4 > len(data) or data[pos] != 0xFF or data[pos + 1] & 0xE0 != 0xE0:
        return None
    version = (data[pos + 1] >> 3) & 3
    layer = (data[pos + 1] >> 1) & 3
    bitrate_idx = data[pos + 2] >> 4
    rate_idx = (data[pos + 2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate_idx in (0, 15) or rate_idx == 3:
        return None
    bitrates = _MP3_BITRATES_V1_L3 if version == 3 else _MP3_BITRATES_V2_L3
    rate = _MP3_RATES[version][rate_idx]
    padding = (data[pos + 2] >> 1) & 1
    return (144 if version == 3 else 72) * bitrates[bitrate_idx] * 1000 // rate + padding


def _looks_like_mp3(data: bytes) -> bool:
    # One frame header could be chance inside a continuation chunk; when the next frame is within the data,
    # require its header too.
    length = _mp3_frame_length(data, 0)
    if length is None:
        return False
    return length + 4 > len(data) or _mp3_frame_length(data, length) is not None
