"""Every bad input gets a clear 4xx JSON error and changes no row."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from bridge.offline import wav_bytes
from tests.helpers import bearer, chunk_body, new_session, new_tenant, row_counts

SPEECHLESS_WAV = wav_bytes(np.zeros(16000, dtype=np.float32))


async def assert_refused(client: Any, response: Any, status: int, code: str, before: dict[str, int]) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code
    assert isinstance(body["detail"], str) and body["detail"]
    assert row_counts(client) == before


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        pytest.param({"audio_chunk": "not base64!!"}, 400, "invalid_request", id="malformed-base64"),
        pytest.param({"audio_chunk": "QUJD="}, 400, "invalid_request", id="bad-padding"),
        pytest.param(
            {"audio_chunk": base64.b64encode(b"hello, not audio at all").decode()},
            400,
            "invalid_audio",
            id="non-audio-bytes",
        ),
        pytest.param(
            {"audio_chunk": base64.b64encode(b"RIFF\x00\x00\x00\x00WAVEjunk").decode()},
            400,
            "invalid_audio",
            id="broken-wav-header",
        ),
        pytest.param({"mime_type": "application/pdf"}, 400, "invalid_audio", id="unsupported-mime"),
        pytest.param({"sequence_number": -1}, 400, "invalid_request", id="negative-sequence"),
        pytest.param({"sequence_number": 2**31}, 400, "invalid_request", id="huge-sequence"),
        pytest.param({"wait_ms": 5001}, 400, "invalid_request", id="wait-too-long"),
        pytest.param({"wait_ms": -1}, 400, "invalid_request", id="negative-wait"),
        pytest.param({"wait_ms": "1000"}, 400, "invalid_request", id="wait-as-text"),
        pytest.param({"sequence_number": "3"}, 400, "invalid_request", id="string-sequence"),
        pytest.param({"speaker": ""}, 400, "invalid_request", id="empty-speaker"),
        pytest.param({"speaker": "a" * 65}, 400, "invalid_request", id="long-speaker"),
        pytest.param({"speaker": "bob\x00"}, 400, "invalid_request", id="control-char-speaker"),
        pytest.param({"speaker": "bob\u200b"}, 400, "invalid_request", id="format-char-speaker"),
        pytest.param({"audio_chunk": None}, 400, "invalid_request", id="missing-audio"),
        pytest.param({"session_id": None}, 400, "invalid_request", id="missing-session"),
        pytest.param({"tenant_id": "someone-else"}, 403, "tenant_mismatch", id="tenant-mismatch"),
    ],
)
async def test_bad_chunk_fields_are_refused(
    app_client: Callable[..., Any], change: dict[str, Any], status: int, code: str
) -> None:
    """A chunk with a bad field is refused with the contract's code and nothing is stored."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        body = chunk_body(session_id, "candidate", 0, SPEECHLESS_WAV)
        body.update(change)
        body = {k: v for k, v in body.items() if v is not None}
        before = row_counts(client)
        response = await client.post("/functions/v1/process-audio", json=body, headers=bearer(token))
        await assert_refused(client, response, status, code, before)


async def test_unicode_speaker_is_welcome(app_client: Callable[..., Any]) -> None:
    """Speakers may use letters of any script."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        body = chunk_body(session_id, "Zoë 李", 0, SPEECHLESS_WAV)
        response = await client.post("/functions/v1/process-audio", json=body, headers=bearer(token))
        assert response.status_code == 200
        assert response.json()["status"] == "accepted"


async def test_malformed_json_is_refused(app_client: Callable[..., Any]) -> None:
    """A body that is not JSON is a 400 and stores nothing."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        _, token = await new_session(client, key)
        before = row_counts(client)
        response = await client.post(
            "/functions/v1/process-audio",
            content=b"{not json",
            headers={**bearer(token), "content-type": "application/json"},
        )
        await assert_refused(client, response, 400, "invalid_request", before)


async def test_oversize_body_is_413(app_client: Callable[..., Any]) -> None:
    """A body over MAX_BODY_BYTES is refused with 413 before anything is stored."""
    async with app_client(max_body_bytes=50_000) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        big = wav_bytes(np.zeros(16000 * 3, dtype=np.float32))
        before = row_counts(client)
        response = await client.post(
            "/functions/v1/process-audio", json=chunk_body(session_id, "candidate", 0, big), headers=bearer(token)
        )
        await assert_refused(client, response, 413, "payload_too_large", before)


async def test_unknown_session_is_404(app_client: Callable[..., Any]) -> None:
    """A chunk for a session that does not exist is a 404 and stores nothing."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        before = row_counts(client)
        body = chunk_body("00000000-0000-0000-0000-000000000000", "candidate", 0, SPEECHLESS_WAV)
        response = await client.post("/functions/v1/process-audio", json=body, headers=bearer(key))
        await assert_refused(client, response, 404, "not_found", before)


async def test_other_tenants_session_is_404(app_client: Callable[..., Any]) -> None:
    """Tenant B's key cannot write to, read, end or delete tenant A's session: it looks unknown."""
    async with app_client() as client:
        _, key_a = await new_tenant(client, "a")
        _, key_b = await new_tenant(client, "b")
        session_id, _ = await new_session(client, key_a)
        before = row_counts(client)
        body = chunk_body(session_id, "candidate", 0, SPEECHLESS_WAV)
        attempts = [
            await client.post("/functions/v1/process-audio", json=body, headers=bearer(key_b)),
            await client.get(f"/sessions/{session_id}", headers=bearer(key_b)),
            await client.get(f"/sessions/{session_id}/transcript", headers=bearer(key_b)),
            await client.post(f"/sessions/{session_id}/end", headers=bearer(key_b)),
            await client.delete(f"/sessions/{session_id}", headers=bearer(key_b)),
        ]
        for response in attempts:
            await assert_refused(client, response, 404, "not_found", before)


async def test_wrong_or_missing_credential_is_401(app_client: Callable[..., Any]) -> None:
    """A missing, unknown or forged credential is a 401 and stores nothing."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        before = row_counts(client)
        body = chunk_body(session_id, "candidate", 0, SPEECHLESS_WAV)
        forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
        for headers in ({}, bearer("ibk_unknown"), bearer(forged), {"Authorization": f"Basic {token}"}):
            response = await client.post("/functions/v1/process-audio", json=body, headers=headers)
            await assert_refused(client, response, 401, "unauthorized", before)


async def test_closed_session_refuses_late_writes(app_client: Callable[..., Any]) -> None:
    """After `end` and its grace period, writes are 409 session_closed and store nothing."""
    async with app_client(end_grace_s=0.0) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        ended = await client.post(f"/sessions/{session_id}/end", headers=bearer(token))
        assert ended.status_code == 200
        before = row_counts(client)
        body = chunk_body(session_id, "candidate", 0, SPEECHLESS_WAV)
        response = await client.post("/functions/v1/process-audio", json=body, headers=bearer(token))
        await assert_refused(client, response, 409, "session_closed", before)
        entry = {"session_id": session_id, "speaker": "x", "sequence_number": 0, "text": "late"}
        response = await client.post("/functions/v1/transcript-bridge", json=entry, headers=bearer(token))
        await assert_refused(client, response, 409, "session_closed", before)


async def test_writes_just_after_end_are_still_accepted(app_client: Callable[..., Any]) -> None:
    """A chunk arriving within the grace window after `end` is accepted and flushed."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        await client.post(f"/sessions/{session_id}/end", headers=bearer(token))
        body = chunk_body(session_id, "candidate", 0, SPEECHLESS_WAV)
        response = await client.post("/functions/v1/process-audio", json=body, headers=bearer(token))
        assert response.status_code == 200
        assert response.json()["status"] == "accepted"


async def test_same_sequence_other_audio_is_conflict(app_client: Callable[..., Any]) -> None:
    """The same sequence number with other bytes is 409 sequence_conflict and keeps the first chunk."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        first = chunk_body(session_id, "candidate", 0, SPEECHLESS_WAV) | {"wait_ms": 5000}  # processed: rows settle
        assert (await client.post("/functions/v1/process-audio", json=first, headers=bearer(token))).status_code == 200
        before = row_counts(client)
        other = chunk_body(session_id, "candidate", 0, wav_bytes(np.zeros(8000, dtype=np.float32)))
        response = await client.post("/functions/v1/process-audio", json=other, headers=bearer(token))
        await assert_refused(client, response, 409, "sequence_conflict", before)


async def test_continuation_without_any_header_is_invalid_audio(app_client: Callable[..., Any]) -> None:
    """A WebM continuation chunk as a speaker's first chunk can never decode: 400 invalid_audio, nothing stored."""
    from tests.helpers import FIXTURES

    continuation = (FIXTURES / "audio" / "webm_chunk_001.webm").read_bytes()
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        before = row_counts(client)
        body = chunk_body(session_id, "candidate", 0, continuation, mime="audio/webm;codecs=opus")
        response = await client.post("/functions/v1/process-audio", json=body, headers=bearer(token))
        await assert_refused(client, response, 400, "invalid_audio", before)


async def test_runaway_client_gets_429_with_retry_after(app_client: Callable[..., Any]) -> None:
    """Far more chunks per second than any recorder sends get 429 rate_limited with Retry-After, storing nothing."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        statuses = []
        for seq in range(80):
            body = chunk_body(session_id, "candidate", seq, b"")
            response = await client.post("/functions/v1/process-audio", json=body, headers=bearer(token))
            statuses.append(response.status_code)
            if response.status_code == 429:
                assert response.headers["retry-after"].isdigit()
                assert response.json()["error"] == "rate_limited"
                break
        assert statuses[-1] == 429
        assert statuses[:-1] == [200] * (len(statuses) - 1)
        stored = (await client.get(f"/sessions/{session_id}", headers=bearer(token))).json()["next_sequence"]
        assert stored == {"candidate": len(statuses) - 1}


async def test_rate_limits_can_be_turned_off(app_client: Callable[..., Any]) -> None:
    """RATE_LIMITS=off lets a load test send as fast as it likes."""
    async with app_client(rate_limits="off") as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        for seq in range(80):
            body = chunk_body(session_id, "candidate", seq, b"")
            response = await client.post("/functions/v1/process-audio", json=body, headers=bearer(token))
            assert response.status_code == 200
