"""The OpenAI engine at the HTTP boundary: request shape, response parsing and error answers (respx)."""

from __future__ import annotations

import email
import email.policy
import io
import wave
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
import respx

from shared.errors import EngineUnavailable
from shared.stt.base import SAMPLE_RATE
from shared.stt.filters import clean_transcription
from shared.stt.openai_engine import OpenAITranscriber

API = "https://api.openai.com/v1"
KEY = "sk-test-0123456789"
SPEECH = (np.sin(np.linspace(0, 2000 * np.pi, 2 * SAMPLE_RATE)) * 0.3).astype(np.float32)

# Shapes as in OpenAI's API reference for POST /v1/audio/transcriptions.
VERBOSE_JSON: dict[str, Any] = {
    "task": "transcribe",
    "language": "english",
    "duration": 2.0,
    "text": "I tell you it is not poison, she cried.",
    "segments": [
        {
            "id": 0,
            "seek": 0,
            "start": 0.0,
            "end": 2.0,
            "text": " I tell you it is not poison, she cried.",
            "tokens": [50364, 286, 980, 291, 309, 307, 406, 17847, 11, 750, 14116, 13, 50464],
            "temperature": 0.0,
            "avg_logprob": -0.2,
            "compression_ratio": 0.95,
            "no_speech_prob": 0.01,
        }
    ],
    "usage": {"type": "duration", "seconds": 2},
}
HALLUCINATED_VERBOSE_JSON: dict[str, Any] = {
    **VERBOSE_JSON,
    "text": "Thank you.",
    "segments": [
        {
            **VERBOSE_JSON["segments"][0],
            "text": " Thank you.",
            "avg_logprob": -0.9,
            "no_speech_prob": 0.85,
            "compression_ratio": 0.6,
        }
    ],
}
GPT4O_JSON: dict[str, Any] = {
    "text": "I tell you it is not poison, she cried.",
    "logprobs": [
        {"token": "I", "logprob": -0.01, "bytes": [73]},
        {"token": " tell", "logprob": -0.05, "bytes": [32, 116, 101, 108, 108]},
    ],
    "usage": {
        "type": "tokens",
        "input_tokens": 14,
        "input_token_details": {"text_tokens": 0, "audio_tokens": 14},
        "output_tokens": 12,
        "total_tokens": 26,
    },
}
INVALID_KEY_BODY = {
    "error": {
        "message": "Incorrect API key provided: sk-test-***6789. You can find your API key at "
        "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
}
RATE_LIMIT_BODY = {
    "error": {
        "message": "Rate limit reached for whisper-1 in organization org-test on requests per min (RPM): "
        "Limit 50, Used 50, Requested 1. Please try again in 20s.",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
}
SERVER_ERROR_BODY = {
    "error": {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error",
        "param": None,
        "code": None,
    }
}


@pytest.fixture
def api() -> Iterator[respx.MockRouter]:
    """OpenAI's API mocked at the HTTP boundary; unmatched requests fail the test."""
    with respx.mock(base_url=API, assert_all_mocked=True, assert_all_called=False) as router:
        yield router


def fields(request: httpx.Request) -> dict[str, tuple[str | None, str | None, bytes]]:
    """The multipart form of a request: name -> (filename, content type, bytes)."""
    raw = b"Content-Type: " + request.headers["content-type"].encode() + b"\r\n\r\n" + request.content
    message = email.message_from_bytes(raw, policy=email.policy.HTTP)
    parsed: dict[str, tuple[str | None, str | None, bytes]] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        content_type = part["content-type"]
        parsed[str(name)] = (part.get_filename(), str(content_type) if content_type else None, payload)
    return parsed


def text_field(form: dict[str, tuple[str | None, str | None, bytes]], name: str) -> str:
    return form[name][2].decode()


async def test_whisper1_request_shape(api: respx.MockRouter) -> None:
    """whisper-1 gets a multipart upload of audio.wav (16 kHz mono 16-bit) with verbose_json, language, prompt and the key."""
    route = api.post("/audio/transcriptions").respond(200, json=VERBOSE_JSON)
    engine = OpenAITranscriber(KEY, max_retries=0)
    long_prompt = "earlier words " * 40 + "the last committed sentence."
    await engine.transcribe(SPEECH, language="en", prompt=long_prompt)
    await engine.close()

    request = route.calls.last.request
    assert request.url == f"{API}/audio/transcriptions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    form = fields(request)
    assert text_field(form, "model") == "whisper-1"
    assert text_field(form, "response_format") == "verbose_json"
    assert text_field(form, "language") == "en"
    prompt = text_field(form, "prompt")
    assert len(prompt) <= 200
    assert long_prompt.endswith(prompt)
    assert prompt.endswith("the last committed sentence.")
    filename, content_type, data = form["file"]
    assert filename == "audio.wav"
    assert content_type == "audio/wav"
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, SAMPLE_RATE)
        assert wav.getnframes() == len(SPEECH)


async def test_language_and_prompt_are_omitted_when_not_given(api: respx.MockRouter) -> None:
    """Without a language or prompt the form carries neither field, so OpenAI detects the language."""
    route = api.post("/audio/transcriptions").respond(200, json=VERBOSE_JSON)
    engine = OpenAITranscriber(KEY, max_retries=0)
    result = await engine.transcribe(SPEECH)
    await engine.close()
    form = fields(route.calls.last.request)
    assert "language" not in form
    assert "prompt" not in form
    assert result.language == "en"  # "english" in verbose_json becomes the ISO code


async def test_verbose_json_is_parsed(api: respx.MockRouter) -> None:
    """A verbose_json answer becomes text, segments with their quality signals and a confidence."""
    api.post("/audio/transcriptions").respond(200, json=VERBOSE_JSON)
    engine = OpenAITranscriber(KEY, max_retries=0)
    result = await engine.transcribe(SPEECH, language="en")
    await engine.close()
    assert result.text == "I tell you it is not poison, she cried."
    assert result.language == "en"
    (segment,) = result.segments
    assert segment.text == "I tell you it is not poison, she cried."
    assert (segment.start, segment.end) == (0.0, 2.0)
    assert segment.avg_logprob == -0.2
    assert segment.no_speech_prob == 0.01
    assert segment.compression_ratio == 0.95
    assert result.confidence == pytest.approx(np.exp(-0.2))


async def test_hallucinated_thank_you_is_filtered(api: respx.MockRouter) -> None:
    """A "Thank you." that whisper-1 marks as probably silent is emptied by the hallucination filter."""
    api.post("/audio/transcriptions").respond(200, json=HALLUCINATED_VERBOSE_JSON)
    engine = OpenAITranscriber(KEY, max_retries=0)
    result = clean_transcription(await engine.transcribe(SPEECH))
    await engine.close()
    assert result.text == ""


@pytest.mark.parametrize("model", ["gpt-4o-transcribe", "gpt-4o-mini-transcribe"])
async def test_gpt4o_models_use_json(api: respx.MockRouter, model: str) -> None:
    """gpt-4o transcription models are asked for json with token logprobs; the answer is text plus a confidence."""
    route = api.post("/audio/transcriptions").respond(200, json=GPT4O_JSON)
    engine = OpenAITranscriber(KEY, model=model, max_retries=0)
    result = await engine.transcribe(SPEECH, language="en", prompt="Interview about backend work.")
    await engine.close()
    form = fields(route.calls.last.request)
    assert text_field(form, "model") == model
    assert text_field(form, "response_format") == "json"
    assert text_field(form, "include[]") == "logprobs"
    assert text_field(form, "prompt") == "Interview about backend work."
    assert result.text == "I tell you it is not poison, she cried."
    assert result.segments == ()
    assert result.confidence == pytest.approx(np.exp(-0.03))


async def test_json_without_logprobs_has_no_confidence(api: respx.MockRouter) -> None:
    """A plain json answer ({"text": ...}) gives the text and no confidence."""
    api.post("/audio/transcriptions").respond(200, json={"text": "Hello there."})
    engine = OpenAITranscriber(KEY, model="gpt-4o-mini-transcribe", max_retries=0)
    result = await engine.transcribe(SPEECH)
    await engine.close()
    assert result.text == "Hello there."
    assert result.confidence is None


async def test_custom_base_url() -> None:
    """OPENAI_BASE_URL redirects the upload to another OpenAI-compatible server."""
    with respx.mock(assert_all_mocked=True) as router:
        route = router.post("http://stt.internal:8000/v1/audio/transcriptions").respond(200, json=VERBOSE_JSON)
        engine = OpenAITranscriber(KEY, base_url="http://stt.internal:8000/v1/", max_retries=0)
        result = await engine.transcribe(SPEECH)
        await engine.close()
    assert route.call_count == 1
    assert result.text.startswith("I tell you")


async def test_invalid_key_is_engine_unavailable_and_not_retried(api: respx.MockRouter) -> None:
    """A 401 invalid_api_key answer tells the operator to fix OPENAI_API_KEY, after a single request."""
    route = api.post("/audio/transcriptions").respond(401, json=INVALID_KEY_BODY)
    engine = OpenAITranscriber(KEY, max_retries=2)
    with pytest.raises(EngineUnavailable) as excinfo:
        await engine.transcribe(SPEECH)
    await engine.close()
    assert "API key" in excinfo.value.detail
    assert "OPENAI_API_KEY" in excinfo.value.detail
    assert "invalid_api_key" in excinfo.value.detail
    assert route.call_count == 1


async def test_rate_limit_carries_retry_after(api: respx.MockRouter) -> None:
    """A 429 rate_limit_exceeded answer becomes EngineUnavailable with the server's Retry-After seconds."""
    route = api.post("/audio/transcriptions").respond(429, json=RATE_LIMIT_BODY, headers={"retry-after": "20"})
    engine = OpenAITranscriber(KEY, max_retries=0)
    with pytest.raises(EngineUnavailable) as excinfo:
        await engine.transcribe(SPEECH)
    await engine.close()
    assert excinfo.value.retry_after == 20
    assert "rate limit" in excinfo.value.detail
    assert route.call_count == 1


async def test_quota_exhausted_is_reported(api: respx.MockRouter) -> None:
    """A 429 insufficient_quota answer says the quota is exhausted rather than a passing rate limit."""
    body = {
        "error": {
            "message": "You exceeded your current quota, please check your plan and billing details.",
            "type": "insufficient_quota",
            "param": None,
            "code": "insufficient_quota",
        }
    }
    api.post("/audio/transcriptions").respond(429, json=body)
    engine = OpenAITranscriber(KEY, max_retries=0)
    with pytest.raises(EngineUnavailable, match="quota"):
        await engine.transcribe(SPEECH)
    await engine.close()


async def test_rate_limit_is_retried_by_the_sdk_then_succeeds(api: respx.MockRouter) -> None:
    """One 429 followed by success gives the transcription: the SDK retries after the server's short delay."""
    route = api.post("/audio/transcriptions").mock(
        side_effect=[
            httpx.Response(429, json=RATE_LIMIT_BODY, headers={"retry-after-ms": "10"}),
            httpx.Response(200, json=VERBOSE_JSON),
        ]
    )
    engine = OpenAITranscriber(KEY, max_retries=1)
    result = await engine.transcribe(SPEECH)
    await engine.close()
    assert result.text.startswith("I tell you")
    assert route.call_count == 2


@pytest.mark.parametrize("max_retries", [0, 2])
async def test_server_errors_are_retried_then_unavailable(api: respx.MockRouter, max_retries: int) -> None:
    """Repeated 500s cost exactly max_retries + 1 requests, then EngineUnavailable."""
    route = api.post("/audio/transcriptions").respond(500, json=SERVER_ERROR_BODY, headers={"retry-after-ms": "5"})
    engine = OpenAITranscriber(KEY, max_retries=max_retries)
    with pytest.raises(EngineUnavailable, match="500"):
        await engine.transcribe(SPEECH)
    await engine.close()
    assert route.call_count == max_retries + 1


async def test_timeout_is_retried_then_unavailable(api: respx.MockRouter) -> None:
    """A request that times out is retried once (max_retries=1), then reported as EngineUnavailable."""
    route = api.post("/audio/transcriptions").mock(side_effect=httpx.ReadTimeout("timed out"))
    engine = OpenAITranscriber(KEY, max_retries=1, timeout_s=5)
    with pytest.raises(EngineUnavailable, match="timed out after 5 s"):
        await engine.transcribe(SPEECH)
    await engine.close()
    assert route.call_count == 2


async def test_unreachable_api_is_engine_unavailable(api: respx.MockRouter) -> None:
    """A connection failure becomes EngineUnavailable naming the server it tried."""
    api.post("/audio/transcriptions").mock(side_effect=httpx.ConnectError("connection refused"))
    engine = OpenAITranscriber(KEY, max_retries=0)
    with pytest.raises(EngineUnavailable, match="could not reach OpenAI"):
        await engine.transcribe(SPEECH)
    await engine.close()


async def test_unknown_model_is_engine_unavailable(api: respx.MockRouter) -> None:
    """A 404 for the model points the operator at OPENAI_MODEL."""
    body = {
        "error": {
            "message": "The model `whisper-9` does not exist",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    api.post("/audio/transcriptions").respond(404, json=body)
    engine = OpenAITranscriber(KEY, model="whisper-9", max_retries=0)
    with pytest.raises(EngineUnavailable, match="OPENAI_MODEL"):
        await engine.transcribe(SPEECH)
    await engine.close()


async def test_too_short_audio_makes_no_request(api: respx.MockRouter) -> None:
    """Audio shorter than the API's 0.1 s minimum gives empty text without a request."""
    route = api.post("/audio/transcriptions").respond(200, json=VERBOSE_JSON)
    engine = OpenAITranscriber(KEY, max_retries=0)
    result = await engine.transcribe(np.zeros(800, dtype=np.float32))
    await engine.close()
    assert result.text == ""
    assert route.call_count == 0


async def test_ready_at_once_and_caller_client_stays_open(api: respx.MockRouter) -> None:
    """The engine is ready without start-up work, and closing it leaves a caller's HTTP client open."""
    api.post("/audio/transcriptions").respond(200, json=VERBOSE_JSON)
    async with httpx.AsyncClient() as client:
        engine = OpenAITranscriber(KEY, max_retries=0, http_client=client)
        assert engine.ready
        assert (engine.name, engine.partials_by_default) == ("openai", False)
        await engine.start()
        await engine.wait_ready()
        result = await engine.transcribe(SPEECH)
        await engine.close()
        assert not client.is_closed
    assert result.text.startswith("I tell you")
