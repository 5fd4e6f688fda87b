"""Two bridge instances on one Postgres database, like two machines: one speaker's chunks split between them.

Each instance has its own app, asyncpg pool, LivePath (in-memory buffer caches, worker id) and hub; they share
only the database. Whatever the split and however the requests interleave, every utterance becomes exactly one
entry, no chunk stays pending, and the transcript is the one a single instance makes from the same chunks.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import cache
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest

from bridge.app import create_app
from bridge.services import Services
from shared.broadcast.local import LocalHub
from shared.settings import Settings
from shared.stt.wavio import wav_bytes
from tests.helpers import bearer, chunk_body, load_pcm, wav_chunks
from tests.isolation.world import SPEECH, in_process, seed_api_key, silence_chunk, speech_chunks

Key = tuple[str, int, int, str]  # speaker, first_sequence, last_sequence, text


@cache
def short_chunks() -> tuple[bytes, ...]:
    """Many short chunks: 1 s pieces of real speech, each followed by 1 s of silence (a pause ends each one)."""
    speech = wav_chunks(load_pcm(SPEECH), 1.0)
    silence = wav_bytes(np.zeros(16_000, dtype=np.float32))
    out: list[bytes] = []
    for piece in speech:
        out += [piece, silence]
    return tuple(out)


def speech_stream() -> list[bytes]:
    """The recording as 2 s chunks, then silence so the last utterance closes before the end."""
    return [*speech_chunks(), silence_chunk(), silence_chunk()]


@asynccontextmanager
async def instances(settings: Settings, count: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """`count` bridges on the same settings (one database), each with its own pool, LivePath and hub."""
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(count):
            clients.append(await stack.enter_async_context(in_process(create_app(settings, broadcaster=LocalHub()))))
        yield clients


def services_of(client: httpx.AsyncClient) -> Services:
    found: Services = client.app.state.services  # type: ignore[attr-defined]
    return found


async def post(client: httpx.AsyncClient, token: str, session_id: str, speaker: str, seq: int, data: bytes) -> str:
    response = await client.post(
        "/functions/v1/process-audio", json=chunk_body(session_id, speaker, seq, data), headers=bearer(token)
    )
    assert response.status_code == 200, response.text
    status: str = response.json()["status"]
    return status


async def finish(client: httpx.AsyncClient, token: str, session_id: str) -> list[dict[str, Any]]:
    ended = await client.post(f"/sessions/{session_id}/end", headers=bearer(token))
    assert ended.status_code == 200, ended.text
    transcript = await client.get(f"/sessions/{session_id}/transcript", headers=bearer(token))
    entries: list[dict[str, Any]] = transcript.json()["entries"]
    return entries


def keys(entries: list[dict[str, Any]]) -> list[Key]:
    return sorted((e["speaker"], e["first_sequence"], e["last_sequence"], e["text"]) for e in entries)


async def assert_settled(dsn: str, session_id: str, entries: list[dict[str, Any]], streams: dict[str, int]) -> None:
    """No chunk pending, no lease held, each chunk done, and per speaker entries in order without repeats (each
    starting in its own chunk)."""
    conn = await asyncpg.connect(dsn)
    try:
        pending = await conn.fetch(
            "SELECT speaker, sequence_number FROM audio_chunks WHERE session_id = $1 AND state <> 'done'", session_id
        )
        counts = await conn.fetch(
            "SELECT speaker, count(*) AS n FROM audio_chunks WHERE session_id = $1 GROUP BY speaker", session_id
        )
        leases = await conn.fetch(
            "SELECT speaker, lease_owner FROM speaker_streams WHERE session_id = $1 AND lease_owner IS NOT NULL",
            session_id,
        )
        rows = await conn.fetchval("SELECT count(*) FROM transcript_entries WHERE session_id = $1", session_id)
    finally:
        await conn.close()
    assert [tuple(r) for r in pending] == [], "chunks left pending"
    assert {r["speaker"]: r["n"] for r in counts} == streams
    assert [tuple(r) for r in leases] == [], "a lease is still held after the session ended"
    assert rows == len(entries)
    for speaker in streams:
        mine = [e for e in entries if e["speaker"] == speaker]
        firsts = [e["first_sequence"] for e in mine]
        assert firsts == sorted(set(firsts)), f"{speaker}: first_sequence not unique and increasing: {firsts}"
        # ranges may share one chunk: a chunk can hold the end of one utterance and the start of the next
        assert all(a["last_sequence"] <= b["first_sequence"] for a, b in itertools.pairwise(mine)), mine
        texts = [e["text"] for e in mine]
        assert len(texts) == len(set(texts)), f"{speaker}: an utterance stored twice: {texts}"


async def new_session(client: httpx.AsyncClient, api_key: str) -> tuple[str, str]:
    response = await client.post("/sessions", json={"speakers": ["candidate", "interviewer"]}, headers=bearer(api_key))
    assert response.status_code == 201, response.text
    body = response.json()
    return body["session"]["id"], body["token"]


async def single_instance_keys(client: httpx.AsyncClient, api_key: str, streams: dict[str, list[bytes]]) -> list[Key]:
    """The transcript one instance makes from the streams, sent in order, one chunk at a time."""
    session_id, token = await new_session(client, api_key)
    for speaker, chunks in streams.items():
        for seq, data in enumerate(chunks):
            assert await post(client, token, session_id, speaker, seq, data) == "accepted"
    return keys(await finish(client, token, session_id))


SCENARIOS = ["alternate", "concurrent", "concurrent-shuffled"]


@pytest.fixture
def pg_settings(pg_dsn: str, make_settings: Callable[..., Settings]) -> Settings:
    """Settings of a bridge on the test's Postgres schema, simulate engine at zero latency, partials off."""
    return make_settings(store="postgres", database_url=pg_dsn, stt_engine="simulate", partials="off")


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("material", ["speech-2s", "short-1s"])
async def test_two_instances_store_each_utterance_once(
    pg_settings: Settings, pg_dsn: str, scenario: str, material: str
) -> None:
    """Chunks of one speaker split between two instances on one database give each utterance exactly once, nothing pending, and the single-instance transcript."""
    chunks = speech_stream() if material == "speech-2s" else list(short_chunks())
    async with instances(pg_settings, 2) as (first, second):
        api_key = await seed_api_key(services_of(first))
        baseline = await single_instance_keys(first, api_key, {"candidate": chunks})
        assert len(baseline) >= 2, baseline
        session_id, token = await new_session(first, api_key)
        targets = [first, second]
        if scenario == "alternate":
            statuses = [
                await post(targets[seq % 2], token, session_id, "candidate", seq, data)
                for seq, data in enumerate(chunks)
            ]
        else:
            order = list(range(len(chunks)))
            if scenario == "concurrent-shuffled":
                random.Random(len(chunks)).shuffle(order)
            sends = [post(targets[seq % 2], token, session_id, "candidate", seq, chunks[seq]) for seq in order]
            statuses = list(await asyncio.gather(*sends))
        assert set(statuses) == {"accepted"}, statuses
        entries = await finish(second, token, session_id)
    await assert_settled(pg_dsn, session_id, entries, {"candidate": len(chunks)})
    assert [k[:3] for k in keys(entries)] == [k[:3] for k in baseline], "utterance boundaries differ"
    assert keys(entries) == baseline, "same chunks ranges, other audio sent to the engine"


async def test_two_instances_two_speakers_interleaved(pg_settings: Settings, pg_dsn: str) -> None:
    """Two speakers whose chunks race through two instances at once each get the single-instance transcript, nothing lost or doubled."""
    streams = {"candidate": speech_stream(), "interviewer": list(short_chunks())}
    async with instances(pg_settings, 2) as (first, second):
        api_key = await seed_api_key(services_of(first))
        baseline = await single_instance_keys(first, api_key, streams)
        session_id, token = await new_session(second, api_key)
        rng = random.Random(7)
        sends = []
        for speaker, chunks in streams.items():
            for seq, data in enumerate(chunks):
                sends.append(post(rng.choice([first, second]), token, session_id, speaker, seq, data))
        rng.shuffle(sends)
        statuses = await asyncio.gather(*sends)
        assert set(statuses) == {"accepted"}, statuses
        entries = await finish(first, token, session_id)
    await assert_settled(pg_dsn, session_id, entries, {s: len(c) for s, c in streams.items()})
    assert [k[:3] for k in keys(entries)] == [k[:3] for k in baseline], "utterance boundaries differ"
    assert keys(entries) == baseline, "same chunks ranges, other audio sent to the engine"
