"""The session reaper's triggers: the route (service key only), the server's own schedule, and the command."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from freezegun import freeze_time

from bridge.cli import main
from shared.models import NewChunk, Session, Tenant, utcnow
from shared.store.sqlite import SQLiteStore
from tests.helpers import (
    FIXTURES,
    EngineOutage,
    bearer,
    load_pcm,
    new_session,
    new_tenant,
    post_chunk,
    row_counts,
    wav_chunks,
)

SERVICE_KEY = "service-key-for-tests-0123456789abcdef"
REAPER = "/functions/v1/session-reaper"
SPEECH = wav_chunks(load_pcm(FIXTURES / "live" / "two_sentences.flac"))
SUMMARY_KEYS = {"abandoned", "ended", "retried", "failed", "deleted", "machines_destroyed", "webhooks_sent"}


async def test_the_route_abandons_an_idle_session_with_its_audio_in_the_transcript(
    app_client: Callable[..., Any],
) -> None:
    """With the service key, a pass 20 minutes after the last chunk abandons the session; its speech is final."""
    async with app_client(reaper_interval=0) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        for seq, data in enumerate(SPEECH):
            assert (await post_chunk(client, token, session_id, "candidate", seq, data)).status_code == 200
        with freeze_time(utcnow() + timedelta(minutes=20), tick=True):
            response = await client.post(REAPER, headers=bearer(SERVICE_KEY))
            again = await client.post("/session-reaper", headers=bearer(SERVICE_KEY))
        assert response.status_code == 200
        assert response.json() == {**dict.fromkeys(SUMMARY_KEYS, 0), "abandoned": 1}
        assert again.json()["abandoned"] == 0
        session = (await client.get(f"/sessions/{session_id}", headers=bearer(key))).json()
        assert session["status"] == "abandoned"
        transcript = (await client.get(f"/sessions/{session_id}/transcript", headers=bearer(key))).json()
        assert [e["text"] for e in transcript["entries"]] and all(
            e["text"].startswith("[simulated") for e in transcript["entries"]
        )


async def test_the_route_ends_a_session_that_runs_past_the_maximum_duration(app_client: Callable[..., Any]) -> None:
    """A session still receiving audio 5 hours after it began is ended (not abandoned) by a pass."""
    async with app_client(reaper_interval=0, session_max_duration=4 * 3600) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        with freeze_time(utcnow() + timedelta(hours=5), tick=True):
            assert (await post_chunk(client, token, session_id, "candidate", 0, SPEECH[0])).status_code == 200
            summary = (await client.post(REAPER, headers=bearer(SERVICE_KEY))).json()
        assert (summary["ended"], summary["abandoned"]) == (1, 0)
        assert (await client.get(f"/sessions/{session_id}", headers=bearer(key))).json()["status"] == "ended"


async def test_audio_the_engine_never_took_is_listed_as_failed_on_the_session_and_transcript(
    app_client: Callable[..., Any],
) -> None:
    """An outage outlasting CHUNK_MAX_ATTEMPTS passes: the session and the transcript JSON list the failed chunks."""
    async with app_client(reaper_interval=0, chunk_max_attempts=2, transcriber=EngineOutage(10_000)) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        for seq, data in enumerate(SPEECH):
            assert (await post_chunk(client, token, session_id, "candidate", seq, data)).status_code == 200
        for hours in range(1, 5):
            with freeze_time(utcnow() + timedelta(hours=hours), tick=True):
                assert (await client.post(REAPER, headers=bearer(SERVICE_KEY))).status_code == 200
        failed = {"candidate": list(range(len(SPEECH)))}
        session = (await client.get(f"/sessions/{session_id}", headers=bearer(key))).json()
        assert session["status"] == "abandoned"
        assert session["failed_sequences"] == failed
        transcript = (await client.get(f"/sessions/{session_id}/transcript", headers=bearer(key))).json()
        assert transcript["failed_sequences"] == failed
        assert transcript["entries"] == []


async def test_the_route_refuses_every_credential_but_the_service_key(app_client: Callable[..., Any]) -> None:
    """Tenant key, session token, viewer token, a wrong key or none: 401, and no session is touched."""
    async with app_client(reaper_interval=0) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        viewer = (await client.post(f"/sessions/{session_id}/viewer-token", headers=bearer(key))).json()["token"]
        before = row_counts(client)
        with freeze_time(utcnow() + timedelta(hours=5), tick=True):
            for headers in (bearer(key), bearer(token), bearer(viewer), bearer("not-the-service-key"), {}):
                response = await client.post(REAPER, headers=headers)
                assert response.status_code == 401, headers
                assert response.json()["error"] == "unauthorized"
        assert row_counts(client) == before


async def test_the_server_reaps_on_its_own_schedule(app_client: Callable[..., Any]) -> None:
    """With REAPER_INTERVAL set, a session idle past SESSION_IDLE_TIMEOUT is abandoned without anyone asking."""
    async with app_client(reaper_interval=0.2, session_idle_timeout=1) as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        assert (await post_chunk(client, token, session_id, "candidate", 0, SPEECH[0])).status_code == 200
        deadline = time.monotonic() + 15
        status = "active"
        while status == "active" and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            status = (await client.get(f"/sessions/{session_id}", headers=bearer(key))).json()["status"]
        assert status == "abandoned"


async def test_the_server_without_a_schedule_leaves_idle_sessions_alone(app_client: Callable[..., Any]) -> None:
    """REAPER_INTERVAL=0 turns the schedule off: an idle session stays active until someone runs a pass."""
    async with app_client(reaper_interval=0, session_idle_timeout=1) as client:
        _, key = await new_tenant(client)
        session_id, _ = await new_session(client, key)
        await asyncio.sleep(2.5)
        assert (await client.get(f"/sessions/{session_id}", headers=bearer(key))).json()["status"] == "active"


def seed_sessions(data_dir: Path, ages: dict[str, tuple[timedelta, timedelta]], speech_in: str = "") -> dict[str, str]:
    """Sessions created and last active (ages ago) in the embedded store, by name -> id; `speech_in` names the
    one whose speaker's chunks are stored and never processed (the browser left right after sending them)."""

    async def seed() -> dict[str, str]:
        store = SQLiteStore(data_dir / "bridge.sqlite3")
        await store.start()
        try:
            tenant = Tenant(id="t-reap", name="reap", created_at=utcnow())
            await store.create_tenant(tenant, api_key_hash="unused")
            ids: dict[str, str] = {}
            for name, (created, active) in ages.items():
                session = replace(
                    Session.new(tenant.id, speakers=("candidate",)),
                    created_at=utcnow() - created,
                    last_activity_at=utcnow() - active,
                )
                await store.create_session(session)
                ids[name] = session.id
                if name == speech_in:
                    for seq, data in enumerate(SPEECH):
                        await store.insert_chunk(
                            NewChunk(
                                session.id,
                                "candidate",
                                seq,
                                data,
                                hashlib.sha256(data).hexdigest(),
                                "audio/wav",
                                True,
                                utcnow() - active,
                            )
                        )
            return ids
        finally:
            await store.close()

    return asyncio.run(seed())


def entries_of(data_dir: Path, session_id: str) -> list[str]:
    async def read() -> list[str]:
        store = SQLiteStore(data_dir / "bridge.sqlite3")
        await store.start()
        try:
            return [entry.text for entry in await store.list_entries(session_id)]
        finally:
            await store.close()

    return asyncio.run(read())


def statuses(data_dir: Path) -> dict[str, str]:
    async def read() -> dict[str, str]:
        store = SQLiteStore(data_dir / "bridge.sqlite3")
        await store.start()
        try:
            return {s.id: s.status.value for s in await store.list_sessions("t-reap", limit=100)}
        finally:
            await store.close()

    return asyncio.run(read())


def test_the_reap_command_prints_one_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`reap` abandons the idle session with its audio made into entries, ends the over-long one, leaves the
    fresh one, prints the pass's summary as one JSON line and exits 0."""
    hour, minute = timedelta(hours=1), timedelta(minutes=1)
    ids = seed_sessions(
        tmp_path,
        {"idle": (hour, hour), "overlong": (5 * hour, minute), "fresh": (minute, minute)},
        speech_in="idle",
    )
    assert main(["reap", "--data-dir", str(tmp_path), "--engine", "simulate"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0]) == {**dict.fromkeys(SUMMARY_KEYS, 0), "abandoned": 1, "ended": 1}
    assert statuses(tmp_path) == {ids["idle"]: "abandoned", ids["overlong"]: "ended", ids["fresh"]: "active"}
    texts = entries_of(tmp_path, ids["idle"])
    assert texts and all(text.startswith("[simulated") for text in texts)
