"""The whole bridge on a real uvicorn server: chunks posted over HTTP reach the official clients live."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from bridge.app import create_app
from shared.settings import Settings
from shared.stt.base import Transcriber
from tests.conftest import KeepOpen
from tests.helpers import FIXTURES, chunk_body, load_pcm, wav_chunks
from tests.realtime.conftest import serve_in_thread
from tests.realtime.helpers import PySubscriber


@contextmanager
def bridge_server(settings: Settings, transcriber: Transcriber) -> Iterator[str]:
    """The real app (store, hub, engine, auth) on uvicorn in a thread; yields its base URL."""
    with serve_in_thread(create_app(settings, transcriber=KeepOpen(transcriber))) as port:
        yield f"http://127.0.0.1:{port}"


async def py_events(sub: PySubscriber, wanted: set[str], within_s: float = 30.0) -> dict[str, dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(within_s):
        while not wanted <= set(seen):
            message = await sub.received.get()
            seen.setdefault(message["event"], message["payload"])
    return seen


async def node_events(client: Any, wanted: set[str], within_s: float = 30.0) -> dict[str, dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    async with asyncio.timeout(within_s):
        while not wanted <= set(seen):
            line = await client.next(within_s)
            if line.get("kind") == "broadcast":
                seen.setdefault(line["event"], line["payload"])
    return seen


async def test_chunks_reach_realtime_py_and_supabase_js(
    make_settings: Callable[..., Settings], local_transcriber: Transcriber, start_node: Any
) -> None:
    """realtime-py (vsn 1.0.0) and supabase-js (vsn 2.0.0 and 1.0.0), subscribed with the session token from
    POST /sessions, receive the partial, the final entry and the session's end of chunks posted over HTTP."""
    settings = make_settings(stt_engine="local", partials="on")
    chunks = wav_chunks(load_pcm(FIXTURES / "live" / "two_sentences.flac"))
    with bridge_server(settings, local_transcriber) as base:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            from shared.credentials import hash_api_key, new_api_key
            from shared.models import Tenant, utcnow
            from shared.store.sqlite import SQLiteStore

            api_key = new_api_key()
            store = SQLiteStore(settings.sqlite_path)
            await store.start()
            await store.create_tenant(Tenant(id="tenant-e2e", name="e2e", created_at=utcnow()), hash_api_key(api_key))
            await store.close()
            created = (await http.post("/sessions", json={}, headers={"Authorization": f"Bearer {api_key}"})).json()
            realtime, token, session_id = created["realtime"], created["token"], created["session"]["id"]
            assert realtime["url"] == base
            assert realtime["topic"] == f"session:{session_id}"

            py = await PySubscriber.start(
                f"{realtime['url']}/realtime/v1", realtime["topic"], apikey=realtime["apikey"]
            )
            js2 = await start_node(
                "client.mjs",
                f"--url={realtime['url']}",
                f"--apikey={realtime['apikey']}",
                f"--topic={realtime['topic']}",
            )
            js1 = await start_node(
                "client.mjs",
                f"--url={realtime['url']}",
                f"--apikey={realtime['apikey']}",
                f"--topic={realtime['topic']}",
                "--vsn=1.0.0",
            )
            for js in (js2, js1):
                await js.until("status", "SUBSCRIBED", within_s=20)
            for _ in range(100):
                if py.states:
                    break
                await asyncio.sleep(0.05)

            auth = {"Authorization": f"Bearer {token}"}
            for seq, chunk in enumerate(chunks):  # each waits for its run, as a browser's 2 s pace allows
                body = chunk_body(session_id, "candidate", seq, chunk) | {"wait_ms": 5000}
                response = await http.post("/functions/v1/process-audio", json=body, headers=auth)
                assert response.status_code == 200
            ended = await http.post(f"/sessions/{session_id}/end", headers=auth)
            assert ended.json()["status"] == "ended"
            transcript = (await http.get(f"/sessions/{session_id}/transcript", headers=auth)).json()["entries"]

            wanted = {"transcript_partial", "transcript_entry", "session_status"}
            for seen in (await py_events(py, wanted), await node_events(js2, wanted), await node_events(js1, wanted)):
                assert seen["transcript_entry"] == transcript[0]
                assert seen["transcript_partial"]["session_id"] == session_id
                assert seen["transcript_partial"]["text"]
                assert seen["session_status"] == {"session_id": session_id, "status": "ended"}
            await py.close()
