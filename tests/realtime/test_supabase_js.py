"""supabase-js 2.100.0 under Node 20 against the local hub on a real uvicorn server (vsn 2.0.0 and 1.0.0)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest

from .conftest import NodeClient, Server
from .helpers import PySubscriber, RawClient

Start = Callable[..., Awaitable[NodeClient]]
VSNS = [pytest.param(None, id="default-vsn-2.0.0"), pytest.param("1.0.0", id="vsn-1.0.0")]


def _args(server: Server, topic: str = "session:a", apikey: str = "tok-a", vsn: str | None = None) -> list[str]:
    args = [f"--url={server.base_url}", f"--apikey={apikey}", f"--topic={topic}"]
    if vsn:
        args.append(f"--vsn={vsn}")
    return args


@pytest.mark.parametrize("vsn", VSNS)
async def test_supabase_js_receives_hub_and_rest_broadcasts(server: Server, start_node: Start, vsn: str | None) -> None:
    """supabase-js subscribed to session:a receives a hub publish and a REST broadcast, each exactly once."""
    client = await start_node("client.mjs", *_args(server, vsn=vsn))
    ready = await client.until("kind", "ready")
    assert ready["vsn"] == (vsn or "2.0.0")
    status = await client.until("kind", "status")
    assert status["status"] == "SUBSCRIBED"
    await server.hub.publish("session:a", "transcript_entry", {"id": "e1", "text": "Hi."})
    assert await client.next() == {
        "kind": "broadcast",
        "event": "transcript_entry",
        "payload": {"id": "e1", "text": "Hi."},
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{server.realtime_url}/api/broadcast",
            headers={"apikey": "tok-a", "Authorization": "Bearer tok-a"},
            json={"messages": [{"topic": "session:a", "event": "session_note", "payload": {"n": 2}}]},
        )
    assert response.status_code == 202
    assert await client.next() == {"kind": "broadcast", "event": "session_note", "payload": {"n": 2}}


@pytest.mark.parametrize("vsn", VSNS)
async def test_supabase_js_with_another_sessions_token_gets_no_data(
    server: Server, start_node: Start, vsn: str | None
) -> None:
    """supabase-js with session b's token cannot join session:a: CHANNEL_ERROR with the reason, and no data."""
    client = await start_node("client.mjs", *_args(server, apikey="tok-b", vsn=vsn))
    status = await client.until("kind", "status")
    assert status["status"] == "CHANNEL_ERROR"
    assert "You do not have permissions to read from this Channel topic: session:a" in status["error"]
    await server.hub.publish("session:a", "transcript_entry", {"id": "e2"})
    probe = await RawClient.open(server.ws_url)  # a round trip through the server after the publish
    await probe.close()
    lines: list[dict[str, object]] = []

    async def collect() -> None:
        while True:
            lines.append(await client.next(within_s=5))

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(collect(), 0.5)
    assert all(line["kind"] != "broadcast" for line in lines), lines


async def test_supabase_js_v2_binary_push_reaches_other_subscribers(server: Server, start_node: Start) -> None:
    """channel.send() from supabase-js (v2 binary kind 3) reaches a v2 supabase-js, a v1 supabase-js and realtime-py."""
    v2 = await start_node("client.mjs", *_args(server))
    v1 = await start_node("client.mjs", *_args(server, vsn="1.0.0"))
    py = await PySubscriber.start(server.realtime_url, "session:a")
    raw = await RawClient.open(server.ws_url, vsn="2.0.0")
    try:
        await raw.join("session:a", "tok-a")
        for client in (v2, v1):
            assert (await client.until("kind", "status"))["status"] == "SUBSCRIBED"
        sender = await start_node("client.mjs", *_args(server), "--send=cursor", '--send-payload={"x": 5, "who": "ü"}')
        assert (await sender.until("kind", "sent"))["result"] == "ok"
        expected = {"kind": "broadcast", "event": "cursor", "payload": {"x": 5, "who": "ü"}}
        assert await v2.next() == expected
        assert await v1.next() == expected
        assert await py.next() == {"event": "cursor", "payload": {"x": 5, "who": "ü"}}
        frame = await raw.recv_raw()
        assert isinstance(frame, bytes) and frame[0] == 4, "the v2 sender used binary: v2 subscribers get kind 4"
    finally:
        await py.close()
        await raw.close()


async def test_supabase_js_push_of_reserved_event_is_not_delivered(server: Server, start_node: Start) -> None:
    """A transcript_entry pushed by a supabase-js client with a valid token is refused and reaches nobody."""
    listener = await RawClient.open(server.ws_url)
    try:
        await listener.join("session:a", "tok-a")
        sender = await start_node(
            "client.mjs", *_args(server, apikey="tok-tenant"), "--send=transcript_entry", '--send-payload={"text": "x"}'
        )
        await sender.until("kind", "sent")
        assert await listener.silent(within_s=0.5)
    finally:
        await listener.close()
