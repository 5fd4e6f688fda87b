"""The `openai` engine: OpenAI's transcription API through the official SDK (`openai.AsyncOpenAI`).

- The PCM is uploaded as a 16-bit mono WAV named `audio.wav`.
- `whisper-1` is asked for `verbose_json`: segments with `avg_logprob`, `no_speech_prob` and
  `compression_ratio` for the hallucination filter. `gpt-4o-transcribe` / `gpt-4o-mini-transcribe` only
  answer `json`; they are asked for token `logprobs` to derive a confidence, but give no silence signal:
  gate their input with VAD.
- Retries are the SDK's own (408/409/429/5xx and connection errors, exponential backoff, `retry-after`
  honoured); what still fails becomes `EngineUnavailable`, so the audio stays pending.
- The SDK runs on a plain `httpx.AsyncClient` (ours unless one is passed in), so the HTTP boundary can be
  mocked with respx.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from typing import Any, Literal, cast

import httpx
import openai

from shared.errors import EngineUnavailable
from shared.stt.base import SAMPLE_RATE, Pcm, ReadyAtOnce, Segment, Transcription
from shared.stt.filters import clean_text, confidence_of, trim_prompt
from shared.stt.wavio import wav_bytes

__all__ = ["DEFAULT_BASE_URL", "OpenAITranscriber", "response_format_for"]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
UPLOAD_FILENAME = "audio.wav"
MIN_DURATION_S = 0.1  # the API refuses shorter audio
_LOGPROB_MODELS = re.compile(r"^gpt-4o(?:-mini)?-transcribe(?:-\d{4}-\d{2}-\d{2})?$")
# verbose_json names the language in English ("english"); entries store ISO 639-1 codes.
_LANGUAGE_CODES = {
    "english": "en",
    "german": "de",
    "french": "fr",
    "spanish": "es",
    "italian": "it",
    "portuguese": "pt",
    "dutch": "nl",
    "polish": "pl",
    "swedish": "sv",
    "danish": "da",
    "norwegian": "no",
    "finnish": "fi",
    "czech": "cs",
    "russian": "ru",
    "ukrainian": "uk",
    "turkish": "tr",
    "arabic": "ar",
    "hindi": "hi",
    "chinese": "zh",
    "japanese": "ja",
    "korean": "ko",
}


def response_format_for(model: str) -> Literal["verbose_json", "json"]:
    """`verbose_json` (segments with quality signals) for Whisper models, `json` for the gpt-4o models."""
    return "verbose_json" if model.startswith("whisper") else "json"


def _retry_after_seconds(headers: httpx.Headers | Any) -> int | None:
    """Whole seconds from `retry-after` (seconds or HTTP date) or `retry-after-ms`, rounded up."""
    value = headers.get("retry-after")
    if value:
        try:
            return max(0, math.ceil(float(value)))
        except ValueError:
            parsed = email.utils.parsedate_tz(value)
            if parsed is not None:
                return max(0, math.ceil(email.utils.mktime_tz(parsed) - time.time()))
    value_ms = headers.get("retry-after-ms")
    if value_ms:
        try:
            return max(0, math.ceil(float(value_ms) / 1000))
        except ValueError:
            return None
    return None


def _error_code(exc: openai.APIStatusError) -> str | None:
    code = getattr(exc, "code", None)
    return str(code) if code else None


class OpenAITranscriber(ReadyAtOnce):
    """Transcribes through `POST {base_url}/audio/transcriptions`; ready at once, no partials by default."""

    name = "openai"
    partials_by_default = False

    def __init__(
        self,
        api_key: str,
        *,
        model: str = "whisper-1",
        base_url: str | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 2,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.model = model
        self.base_url = (base_url or DEFAULT_BASE_URL).rstrip("/")
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.response_format = response_format_for(model)
        self._owns_http_client = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
        )
        # The SDK accepts a legacy `httpx.AsyncClient` next to its own httpx2 type.
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=self.base_url,
            timeout=timeout_s,
            max_retries=max_retries,
            http_client=cast(Any, self._http),
        )

    async def transcribe(
        self, pcm: Pcm, *, language: str | None = None, prompt: str | None = None, draft: bool = False
    ) -> Transcription:
        """Upload one utterance; EngineUnavailable on a bad key, rate limit, server error or timeout."""
        duration = len(pcm) / SAMPLE_RATE
        if duration < MIN_DURATION_S:
            return Transcription(text="", language=language)
        params: dict[str, Any] = {
            "file": (UPLOAD_FILENAME, wav_bytes(pcm), "audio/wav"),
            "model": self.model,
            "response_format": self.response_format,
        }
        if language:
            params["language"] = language
        trimmed = trim_prompt(prompt)
        if trimmed:
            params["prompt"] = trimmed
        if self.response_format == "json" and _LOGPROB_MODELS.match(self.model):
            params["include"] = ["logprobs"]
        try:
            response = await self._client.audio.transcriptions.create(**params)
        except openai.APIError as exc:
            result = self._map_error(exc, language)
            if isinstance(result, Transcription):
                return result
            raise result from exc
        return self._parse(response, language)

    def _parse(self, response: object, language: str | None) -> Transcription:
        text = clean_text(str(getattr(response, "text", "") or ""))
        answered = getattr(response, "language", None)
        lang = language or (_LANGUAGE_CODES.get(str(answered).lower(), str(answered)) if answered else None)
        raw_segments = getattr(response, "segments", None)
        if raw_segments:
            segments = tuple(
                Segment(
                    start=float(seg.start),
                    end=float(seg.end),
                    text=clean_text(seg.text),
                    avg_logprob=float(seg.avg_logprob),
                    no_speech_prob=float(seg.no_speech_prob),
                    compression_ratio=float(seg.compression_ratio),
                )
                for seg in raw_segments
            )
            return Transcription(text=text, segments=segments, language=lang, confidence=confidence_of(segments))
        logprobs = [lp.logprob for lp in getattr(response, "logprobs", None) or () if lp.logprob is not None]
        confidence = min(1.0, max(0.0, math.exp(sum(logprobs) / len(logprobs)))) if logprobs else None
        return Transcription(text=text, language=lang, confidence=confidence)

    def _map_error(self, exc: openai.APIError, language: str | None) -> EngineUnavailable | Transcription:
        if isinstance(exc, openai.APITimeoutError):
            return EngineUnavailable(
                f"OpenAI transcription timed out after {self.timeout_s:g} s "
                f"({self.max_retries} retries); the audio stays pending"
            )
        if isinstance(exc, openai.APIConnectionError):
            return EngineUnavailable(f"could not reach OpenAI at {self.base_url}; the audio stays pending")
        if not isinstance(exc, openai.APIStatusError):
            return EngineUnavailable(f"OpenAI transcription failed: {exc.message}")
        status, code = exc.status_code, _error_code(exc)
        if isinstance(exc, openai.AuthenticationError):
            return EngineUnavailable(
                f"OpenAI rejected the API key as invalid (401 {code or 'unauthorized'}): set a valid OPENAI_API_KEY; "
                "the audio stays pending"
            )
        if isinstance(exc, openai.RateLimitError):
            if code == "insufficient_quota":
                detail = "OpenAI quota exhausted (429 insufficient_quota): check the plan and billing"
            else:
                detail = "OpenAI rate limit reached (429); the audio stays pending and is retried"
            return EngineUnavailable(detail, retry_after=_retry_after_seconds(exc.response.headers))
        if isinstance(exc, openai.PermissionDeniedError):
            return EngineUnavailable(f"OpenAI refused the request (403 {code or 'forbidden'}): {exc.message}")
        if isinstance(exc, openai.NotFoundError):
            return EngineUnavailable(f"OpenAI does not know the model {self.model!r} (404): check OPENAI_MODEL")
        if isinstance(exc, openai.BadRequestError) and code == "audio_too_short":
            return Transcription(text="", language=language)
        if status >= 500:
            return EngineUnavailable(
                f"OpenAI answered {status} after {self.max_retries} retries; the audio stays pending",
                retry_after=_retry_after_seconds(exc.response.headers),
            )
        return EngineUnavailable(f"OpenAI transcription failed ({status} {code or ''}): {exc.message}".strip())

    async def close(self) -> None:
        """Close the HTTP client if this engine created it."""
        if self._owns_http_client:
            await self._http.aclose()
