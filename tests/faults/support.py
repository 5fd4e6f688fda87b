"""What the fault tests share: a client that posts chunks the way the browser client does, the tally of what it
saw, and the comparison with a run of the same chunks without the fault.

Lost means acknowledged and missing: a chunk answered 2xx whose audio is not in the final transcript. The
transcript of a faulted run is compared with a fault-free run of the same chunks (same speakers, same chunk ranges,
same text); with the `simulate` engine, or the fake OpenAI API that answers with its text, the text is a hash of
the exact samples each utterance had, so equal transcripts mean every chunk's audio reached the engine.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import httpx
import numpy as np

from shared.stt.wavio import wav_bytes
from tests.helpers import FIXTURES, bearer, chunk_body, load_pcm, wav_chunks

SPEECH = FIXTURES / "live" / "two_sentences.flac"
CLIENT_RETRY_S = 0.1  # the bridge's Retry-After is asserted, then waited this long instead (the test stays short)
Key = tuple[str, int, int, str]  # speaker, first_sequence, last_sequence, text


@cache
def speech_stream() -> tuple[bytes, ...]:
    """Two spoken sentences as 2 s WAV chunks, then 2 s of silence so the second one ends without `end`."""
    silence = wav_bytes(np.zeros(32_000, dtype=np.float32))
    return (*wav_chunks(load_pcm(SPEECH), 2.0), silence)


def keys(entries: Sequence[dict[str, Any]]) -> list[Key]:
    """What a transcript says, without the times (they count from each session's own start)."""
    return sorted((e["speaker"], e["first_sequence"], e["last_sequence"], e["text"]) for e in entries)


@dataclass
class Tally:
    """What one fault test injected and what its clients saw (every chunk's answer, other requests' refusals)."""

    fault: str
    injected: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    acknowledged: set[tuple[str, str, int]] = field(default_factory=set)  # (session, speaker, sequence)
    lost: int | None = None
    started: float = field(default_factory=time.monotonic)

    def saw(self, response: httpx.Response) -> None:
        body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
        self.statuses[f"{response.status_code} {body.get('status') or body.get('error') or ''}".strip()] += 1

    def counts(self) -> dict[str, object]:
        return {
            "faults_injected": self.injected,
            "acknowledged_chunks": len(self.acknowledged),
            "acknowledged_lost": self.lost,
            "answers": dict(sorted(self.statuses.items())),
            "seconds": round(time.monotonic() - self.started, 1),
        }

    def line(self) -> str:
        counts = " ".join(f"{k}={v}" for k, v in self.counts().items() if k != "answers")
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(self.statuses.items()))
        return f"{self.fault}: {counts} answers=({answers})"

    def settle(self, session_id: str, expected: Sequence[Key], got: Sequence[Key]) -> int:
        """Count this session's acknowledged chunks whose expected entry is missing from what it got; adds to `lost`."""
        missing = [key for key in expected if key not in got]
        lost = sum(
            1
            for session, speaker, sequence in self.acknowledged
            if session == session_id
            and any(s == speaker and first <= sequence <= last for s, first, last, _ in missing)
        )
        self.lost = (self.lost or 0) + lost
        return lost


def check_unavailable(response: httpx.Response) -> None:
    """A refusal the client can act on: 503 with a Retry-After of whole seconds and the error shape."""
    assert response.status_code == 503, f"expected 2xx or 503, got {response.status_code}: {response.text}"
    body = response.json()
    assert {"error", "detail"} <= set(body), body
    assert body["error"] in ("store_unavailable", "service_unavailable"), body
    retry_after = response.headers.get("retry-after", "")
    assert retry_after.isdigit() and int(retry_after) >= 1, f"503 without a usable Retry-After: {response.headers}"


async def post_until_stored(
    client: httpx.AsyncClient,
    token: str,
    session_id: str,
    speaker: str,
    sequence: int,
    data: bytes,
    tally: Tally,
    *,
    wait_ms: int = 0,
    within_s: float = 30.0,
) -> dict[str, Any]:
    """Post one chunk as the browser client does: a 503 is retried with the same sequence number after its
    Retry-After until the chunk is stored; any other answer than 200 or 503 fails the test. Returns the 200 body."""
    deadline = time.monotonic() + within_s
    body = chunk_body(session_id, speaker, sequence, data)
    if wait_ms:
        body["wait_ms"] = wait_ms
    while True:
        try:
            response = await client.post("/functions/v1/process-audio", json=body, headers=bearer(token))
        except httpx.TransportError:  # the browser client retries a network error the same way
            response = None
        if response is not None:
            tally.saw(response)
            if response.status_code == 200:
                tally.acknowledged.add((session_id, speaker, sequence))
                answer: dict[str, Any] = response.json()
                return answer
            check_unavailable(response)
        assert time.monotonic() < deadline, f"chunk {speaker}/{sequence} not stored within {within_s} s"
        await asyncio.sleep(CLIENT_RETRY_S)


async def request_until_served(
    client: httpx.AsyncClient, method: str, url: str, tally: Tally, *, within_s: float = 30.0, **kwargs: Any
) -> httpx.Response:
    """Any other request of an interview (create, end, read), retried after a 503 like a chunk."""
    deadline = time.monotonic() + within_s
    while True:
        response = await client.request(method, url, **kwargs)
        if response.status_code < 300:
            return response
        tally.saw(response)
        check_unavailable(response)
        assert time.monotonic() < deadline, f"{method} {url} not served within {within_s} s"
        await asyncio.sleep(CLIENT_RETRY_S)


async def new_session(
    client: httpx.AsyncClient, api_key: str, tally: Tally, speakers: Sequence[str] = ("candidate",)
) -> tuple[str, str]:
    """(session id, session token) of a new session declaring `speakers`."""
    response = await request_until_served(
        client, "POST", "/sessions", tally, json={"speakers": list(speakers)}, headers=bearer(api_key)
    )
    created = response.json()
    return created["session"]["id"], created["token"]


async def transcript(client: httpx.AsyncClient, token: str, session_id: str, tally: Tally) -> dict[str, Any]:
    """GET /sessions/{id}/transcript as JSON."""
    response = await request_until_served(
        client, "GET", f"/sessions/{session_id}/transcript", tally, headers=bearer(token)
    )
    body: dict[str, Any] = response.json()
    return body


async def end_and_read(client: httpx.AsyncClient, token: str, session_id: str, tally: Tally) -> dict[str, Any]:
    """End the session (its pending audio becomes entries), then read the transcript."""
    ended = await request_until_served(client, "POST", f"/sessions/{session_id}/end", tally, headers=bearer(token))
    assert ended.json()["status"] == "ended", ended.text
    return await transcript(client, token, session_id, tally)


async def wait_for_transcript(
    client: httpx.AsyncClient, token: str, session_id: str, tally: Tally, expected: Sequence[Key], within_s: float
) -> list[Key]:
    """Poll the transcript until it says `expected` (or `within_s` passes); returns what it says last."""
    deadline = time.monotonic() + within_s
    while True:
        got = keys((await transcript(client, token, session_id, tally))["entries"])
        if got == list(expected) or time.monotonic() > deadline:
            return got
        await asyncio.sleep(0.1)
