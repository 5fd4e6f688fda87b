"""GET /usage: what a tenant used per day, counted as the live path works."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from shared.models import utcnow
from tests.helpers import FIXTURES, bearer, load_pcm, new_session, new_tenant, post_chunk, wav_chunks

PCM = load_pcm(FIXTURES / "live" / "two_sentences.flac")
SPEECH = wav_chunks(PCM)


async def test_usage_counts_the_audio_the_engine_and_what_was_made(app_client: Callable[..., Any]) -> None:
    """After one interview, today's row holds its audio seconds, engine time and calls, the session and entries;
    another tenant's usage shows none of it."""
    async with app_client(reaper_interval=0) as client:
        _, key = await new_tenant(client)
        _, other_key = await new_tenant(client, "other")
        session_id, token = await new_session(client, key)
        for seq, data in enumerate(SPEECH):
            assert (await post_chunk(client, token, session_id, "candidate", seq, data)).status_code == 200
        assert (await client.post(f"/sessions/{session_id}/end", headers=bearer(token))).status_code == 200
        entries = (await client.get(f"/sessions/{session_id}/transcript", headers=bearer(key))).json()["entries"]
        today = utcnow().date().isoformat()
        response = await client.get(f"/usage?from={today}&to={today}", headers=bearer(key))
        others = await client.get("/usage", headers=bearer(other_key))
    assert response.status_code == 200
    [day] = response.json()["days"]
    assert day["date"] == today
    assert abs(day["audio_seconds"] - len(PCM) / 16_000) < 0.01
    assert 0 < day["engine_seconds"] <= day["audio_seconds"]
    assert day["engine_calls"] >= len(entries) > 0
    assert (day["sessions"], day["entries"]) == (1, len(entries))
    assert others.json() == {"days": []}


async def test_usage_refuses_bad_ranges_and_session_tokens(app_client: Callable[..., Any]) -> None:
    """Dates that are not YYYY-MM-DD, a reversed or over-long range: 400; a session token: 403."""
    async with app_client(reaper_interval=0) as client:
        _, key = await new_tenant(client)
        _, token = await new_session(client, key)
        for query in (
            "from=2026-13-01",
            "to=yesterday",
            "from=2026-12-04&to=2026-12-01",
            "from=2024-01-01&to=2026-01-01",
        ):
            response = await client.get(f"/usage?{query}", headers=bearer(key))
            assert response.status_code == 400, query
            assert response.json()["error"] == "invalid_request"
        assert (await client.get("/usage", headers=bearer(token))).status_code == 403
