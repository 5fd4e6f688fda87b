"""A Supabase Realtime outage never costs a stored entry: the write succeeds, the broadcast is retried."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import httpx

from bridge.app import create_app
from shared.broadcast.supabase import SupabaseBroadcaster
from shared.settings import Settings
from tests.conftest import running_app
from tests.helpers import bearer, new_session, new_tenant

PROJECT = "https://project-ref.supabase.test"


async def test_entry_is_stored_while_realtime_fails_then_delivered(make_settings: Callable[..., Settings]) -> None:
    """With Realtime answering 503, transcript-bridge still stores the entry (200), and the broadcast goes out
    once Realtime recovers, with the documented request shape."""
    calls: list[httpx.Request] = []

    def realtime(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        if len(calls) <= 2:
            return httpx.Response(503, json={"message": "Service Unavailable"})
        return httpx.Response(202)

    async with httpx.AsyncClient(transport=httpx.MockTransport(realtime)) as client:
        broadcaster = SupabaseBroadcaster(PROJECT, "service-role-key", client=client, backoff_base_s=0.05)
        app = create_app(make_settings(), broadcaster=broadcaster)
        async with running_app(app) as http:
            _, key = await new_tenant(http)
            session_id, token = await new_session(http, key)
            body = {"session_id": session_id, "speaker": "candidate", "sequence_number": 0, "text": "Still here."}
            response = await http.post("/functions/v1/transcript-bridge", json=body, headers=bearer(token))
            assert response.status_code == 200
            assert response.json()["status"] == "stored"
            transcript = await http.get(f"/sessions/{session_id}/transcript", headers=bearer(token))
            assert [e["text"] for e in transcript.json()["entries"]] == ["Still here."]
            for _ in range(100):
                if broadcaster.metrics["sent"]:
                    break
                await asyncio.sleep(0.05)
    assert broadcaster.metrics["sent"] == 1
    assert broadcaster.metrics["retried"] >= 2
    last = calls[-1]
    assert str(last.url) == f"{PROJECT}/realtime/v1/api/broadcast"
    assert last.headers["apikey"] == "service-role-key"
    assert last.headers["authorization"] == "Bearer service-role-key"
    message: dict[str, Any] = httpx.Response(200, content=last.content).json()["messages"][0]
    assert message["topic"] == f"session:{session_id}"
    assert message["event"] == "transcript_entry"
    assert message["payload"]["text"] == "Still here."
