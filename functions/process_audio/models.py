"""The process-audio request, and the base64 rule it must pass before anything is stored."""

from __future__ import annotations

import binascii
from typing import Annotated

import pybase64
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from functions.validation import MAX_SEQUENCE, check_speaker
from shared.errors import InvalidRequest

MAX_WAIT_MS = 5_000


class ProcessAudioRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    session_id: str = Field(min_length=1, max_length=64)
    audio_chunk: str
    speaker: Annotated[str, AfterValidator(check_speaker)]
    sequence_number: int = Field(ge=0, le=MAX_SEQUENCE, strict=True)
    mime_type: str | None = Field(default=None, max_length=128)
    wait_ms: int = Field(default=0, ge=0, le=MAX_WAIT_MS, strict=True)  # wait this long for the chunk's entries


def decode_audio_field(value: str) -> bytes:
    """Standard base64 (a `data:...;base64,` prefix is tolerated); anything else is a 400 before storage.

    pybase64 applies the standard library's rules ~70x faster: the stdlib's `validate=True` took ~0.3 ms of the
    event loop per 2 s WAV chunk, the largest single cost of an acknowledgement."""
    text = value.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    if len(text) % 4:
        raise InvalidRequest(
            "audio_chunk is not valid base64 (its length is not a multiple of 4: missing or extra padding)"
        )
    try:
        return pybase64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(
            f"audio_chunk is not valid base64 ({exc}); send the chunk's bytes base64-encoded with padding"
        ) from exc
