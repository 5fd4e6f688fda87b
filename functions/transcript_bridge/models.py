"""The transcript-bridge request: the brief's flat shape, and the original `transcript_data` shape."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from functions.validation import MAX_SEQUENCE, check_speaker

MAX_MS = 2**31 - 1  # start_ms and end_ms are 32-bit integer columns in Postgres (about 24 days)


class TranscriptData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    text: str = Field(min_length=1, max_length=20_000)
    start_ms: int | None = Field(default=None, ge=0, le=MAX_MS)
    end_ms: int | None = Field(default=None, ge=0, le=MAX_MS)
    language: str | None = Field(default=None, max_length=16)
    confidence: float | None = Field(default=None, ge=0, le=1)


class TranscriptBridgeRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    session_id: str = Field(min_length=1, max_length=64)
    speaker: Annotated[str, AfterValidator(check_speaker)]
    sequence_number: int = Field(ge=0, le=MAX_SEQUENCE)
    tenant_id: str | None = Field(default=None, max_length=64)
    text: str | None = Field(default=None, min_length=1, max_length=20_000)
    start_ms: int | None = Field(default=None, ge=0, le=MAX_MS)
    end_ms: int | None = Field(default=None, ge=0, le=MAX_MS)
    language: str | None = Field(default=None, max_length=16)
    confidence: float | None = Field(default=None, ge=0, le=1)
    transcript_data: TranscriptData | None = None

    @model_validator(mode="after")
    def _one_text(self) -> TranscriptBridgeRequest:
        if self.text is None and self.transcript_data is None:
            raise ValueError("give the entry's text as `text` (or `transcript_data.text`)")
        return self

    def _pick(self, name: str) -> Any:
        own = getattr(self, name)
        if own is not None or self.transcript_data is None:
            return own
        return getattr(self.transcript_data, name)

    @property
    def entry_text(self) -> str:
        return str(self._pick("text")).strip()

    @property
    def entry_start_ms(self) -> int | None:
        value = self._pick("start_ms")
        return None if value is None else int(value)

    @property
    def entry_end_ms(self) -> int | None:
        value = self._pick("end_ms")
        return None if value is None else int(value)

    @property
    def entry_language(self) -> str | None:
        value = self._pick("language")
        return None if value is None else str(value)

    @property
    def entry_confidence(self) -> float | None:
        value = self._pick("confidence")
        return None if value is None else float(value)
