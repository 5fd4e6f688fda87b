"""The WebSocket face of the local hub, against a real uvicorn server, with realtime-py and a raw Phoenix client."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from realtime.types import RealtimeSubscribeStates
from websockets.exceptions import ConnectionClosed, InvalidStatus

from .conftest import TOKENS, Server
from .helpers import PySubscriber, RawClient

ENTRY = {"id": "e1", "session_id": "a", "speaker": "alice", "text": "Hello there.", "start_ms": 61_000}


async def test_realtime_py_receives_hub_publish(server: Server) -> None:
    """A realtime-py 2.34 subscriber of session:a receives what the bridge publishes through hub.publish."""
    sub = await PySubscriber.start(server.realtime_url, "session:a")
    try:
        assert sub.states == [(RealtimeSubscribeStates.SUBSCRIBED, None)]
        await server.hub.publish("session:a", "transcript_entry", ENTRY)
        assert await sub.next() == {"event": "transcript_entry", "payload": ENTRY}
    finally:
        await sub.close()


async def test_realtime_py_receives_rest_batch_broadcast(server: Server) -> None:
    """A broadcast sent through POST /realtime/v1/api/broadcast reaches a realtime-py subscriber."""
    sub = await PySubscriber.start(server.realtime_url, "session:a")
    try:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                f"{server.realtime_url}/api/broadcast",
                headers={"apikey": "tok-a", "Authorization": "Bearer tok-a"},
                json={"messages": [{"topic": "session:a", "event": "note", "payload": {"n": 1}, "private": True}]},
            )
        assert (response.status_code, response.content) == (202, b"")
        assert await sub.next() == {"event": "note", "payload": {"n": 1}}
    finally:
        await sub.close()


async def test_realtime_py_http_send_uses_single_event_endpoint(server: Server) -> None:
    """realtime-py's own channel.http_send() succeeds against the single-event REST endpoint and is delivered."""
    sub = await PySubscriber.start(server.realtime_url, "session:a")
    sender = await PySubscriber.start(server.realtime_url, "session:a", apikey="tok-tenant")
    try:
        await sender.client.channels["realtime:session:a"].http_send("cursor", {"x": 3})
        assert await sub.next() == {"event": "cursor", "payload": {"x": 3}}
    finally:
        await sub.close()
        await sender.close()


async def test_realtime_py_wrong_token_gets_error_and_no_data(server: Server) -> None:
    """A realtime-py join with another session's token gets the Supabase error reply and none of the data."""
    sub = await PySubscriber.start(server.realtime_url, "session:a", apikey="tok-b")
    try:
        state, error = sub.states[0]
        assert state == RealtimeSubscribeStates.CHANNEL_ERROR
        assert error is not None and "You do not have permissions to read from this Channel topic" in error
        await server.hub.publish("session:a", "transcript_entry", ENTRY)
        with pytest.raises(TimeoutError):
            await sub.next(within_s=0.3)
    finally:
        await sub.close()


async def test_join_reply_exact_shape_v1(server: Server) -> None:
    """A vsn 1.0.0 join is answered with the exact Supabase reply object, postgres_changes included."""
    client = await RawClient.open(server.ws_url)
    try:
        ref, reply = await client.join("session:a", "tok-a")
        assert reply == {
            "topic": "realtime:session:a",
            "event": "phx_reply",
            "payload": {"status": "ok", "response": {"postgres_changes": []}},
            "ref": ref,
        }
    finally:
        await client.close()


async def test_join_reply_exact_shape_v2(server: Server) -> None:
    """A vsn 2.0.0 join is answered as [join_ref, ref, topic, "phx_reply", {...}]."""
    client = await RawClient.open(server.ws_url, vsn="2.0.0")
    try:
        ref, reply = await client.join("session:a", "tok-a")
        assert reply == [
            ref,
            ref,
            "realtime:session:a",
            "phx_reply",
            {"status": "ok", "response": {"postgres_changes": []}},
        ]
    finally:
        await client.close()


async def test_old_client_without_vsn_and_null_join_ref(server: Server) -> None:
    """A socket with no vsn speaks 1.0.0, a join with a null join_ref and null broadcast config is accepted."""
    client = await RawClient.open(server.ws_url, vsn=None)
    try:
        payload = {"config": {"broadcast": None, "presence": {"key": ""}}, "access_token": "tok-a"}
        await client.send("realtime:session:a", "phx_join", payload, ref="1", join_ref=None)
        reply = await client.recv()
        assert reply["payload"] == {"status": "ok", "response": {"postgres_changes": []}}
        await server.hub.publish("session:a", "transcript_partial", {"text": "hel"})
        frame = await client.recv()
        assert frame == {
            "topic": "realtime:session:a",
            "event": "broadcast",
            "payload": {"type": "broadcast", "event": "transcript_partial", "payload": {"text": "hel"}},
            "ref": None,
        }
    finally:
        await client.close()


async def test_v2_broadcast_frame_shape(server: Server) -> None:
    """A v2 subscriber gets a hub broadcast as [null, null, topic, "broadcast", {...}]."""
    client = await RawClient.open(server.ws_url, vsn="2.0.0")
    try:
        await client.join("session:a", "tok-a")
        await server.hub.publish("session:a", "session_status", {"session_id": "a", "status": "ended"})
        assert await client.recv() == [
            None,
            None,
            "realtime:session:a",
            "broadcast",
            {"type": "broadcast", "event": "session_status", "payload": {"session_id": "a", "status": "ended"}},
        ]
    finally:
        await client.close()


@pytest.mark.parametrize("ref", [None, "7"])
async def test_heartbeat_is_answered_v1(server: Server, ref: str | None) -> None:
    """Every heartbeat on topic phoenix gets an ok reply carrying the same ref (null for realtime-py)."""
    client = await RawClient.open(server.ws_url)
    try:
        await client.send("phoenix", "heartbeat", {}, ref=ref)
        assert await client.recv() == {
            "topic": "phoenix",
            "event": "phx_reply",
            "payload": {"status": "ok", "response": {}},
            "ref": ref,
        }
    finally:
        await client.close()


async def test_heartbeat_is_answered_v2(server: Server) -> None:
    """A v2 heartbeat gets [null, ref, "phoenix", "phx_reply", ok]."""
    client = await RawClient.open(server.ws_url, vsn="2.0.0")
    try:
        await client.send("phoenix", "heartbeat", {}, ref="12")
        assert await client.recv() == [None, "12", "phoenix", "phx_reply", {"status": "ok", "response": {}}]
    finally:
        await client.close()


async def test_leave_replies_ok_then_phx_close_and_stops_delivery(server: Server) -> None:
    """phx_leave is answered ok, then phx_close with ref = join_ref, and nothing more is delivered."""
    client = await RawClient.open(server.ws_url)
    try:
        join_ref, _ = await client.join("session:a", "tok-a")
        leave_ref = client.ref()
        await client.send("realtime:session:a", "phx_leave", {}, ref=leave_ref, join_ref=join_ref)
        assert await client.recv() == {
            "topic": "realtime:session:a",
            "event": "phx_reply",
            "payload": {"status": "ok", "response": {}},
            "ref": leave_ref,
        }
        assert await client.recv() == {
            "topic": "realtime:session:a",
            "event": "phx_close",
            "payload": {},
            "ref": join_ref,
        }
        await server.hub.publish("session:a", "transcript_entry", ENTRY)
        assert await client.silent()
    finally:
        await client.close()


async def test_hundred_channels_per_socket(server: Server) -> None:
    """A socket may join 100 channels; the 101st join gets ChannelRateLimitReached and the socket stays open."""
    TOKENS["tok-wild"] = {"*"}
    client = await RawClient.open(server.ws_url, apikey="tok-wild")
    try:
        for i in range(100):
            _, reply = await client.join(f"room:{i}", "tok-wild")
            assert reply["payload"]["status"] == "ok", i
        _, reply = await client.join("room:100", "tok-wild")
        assert reply["payload"] == {
            "status": "error",
            "response": {"reason": "ChannelRateLimitReached: Too many channels"},
        }
        await client.send("phoenix", "heartbeat", {}, ref="hb")
        assert (await client.recv())["ref"] == "hb"
    finally:
        TOKENS.pop("tok-wild")
        await client.close()


async def test_idle_socket_is_closed(fast_idle_server: Server) -> None:
    """A socket with nothing inbound for the idle timeout (1 s here, 60 s by default) is closed by the server."""
    client = await RawClient.open(fast_idle_server.ws_url)
    started = asyncio.get_running_loop().time()
    with pytest.raises(ConnectionClosed):
        await client.recv_raw(within_s=5)
    assert 0.9 < asyncio.get_running_loop().time() - started < 3


async def test_heartbeats_keep_a_socket_open(fast_idle_server: Server) -> None:
    """Inbound heartbeats reset the idle timer, so a live client is never closed for idleness."""
    client = await RawClient.open(fast_idle_server.ws_url)
    try:
        for i in range(4):
            await asyncio.sleep(0.5)
            await client.send("phoenix", "heartbeat", {}, ref=str(i))
            assert (await client.recv())["ref"] == str(i)
    finally:
        await client.close()


async def test_socket_without_valid_apikey_is_refused(server: Server) -> None:
    """The WebSocket handshake is refused (403) without a valid apikey."""
    for apikey in (None, "nope"):
        with pytest.raises(InvalidStatus) as info:
            await RawClient.open(server.ws_url, apikey=apikey)
        assert info.value.response.status_code == 403


async def test_join_with_invalid_token_gets_error_reply_socket_stays_open(server: Server) -> None:
    """A join whose access_token is invalid gets an InvalidJWTToken error reply and the socket is not closed."""
    client = await RawClient.open(server.ws_url)
    try:
        _, reply = await client.join("session:a", "forged")
        assert reply["payload"] == {
            "status": "error",
            "response": {"reason": "InvalidJWTToken: invalid or expired token"},
        }
        _, reply2 = await client.join("session:a", "tok-a")
        assert reply2["payload"]["status"] == "ok"
    finally:
        await client.close()


async def test_client_push_of_reserved_event_is_refused_and_not_delivered(server: Server) -> None:
    """A client's broadcast of transcript_entry is answered with an error (ack) and reaches no other subscriber."""
    listener = await RawClient.open(server.ws_url)
    pusher = await RawClient.open(server.ws_url, apikey="tok-tenant")
    try:
        await listener.join("session:a", "tok-a")
        join_ref, _ = await pusher.join("session:a", "tok-tenant", ack=True)
        ref = pusher.ref()
        body = {"type": "broadcast", "event": "transcript_entry", "payload": {"text": "fake"}}
        await pusher.send("realtime:session:a", "broadcast", body, ref=ref, join_ref=join_ref)
        reply = await pusher.recv()
        assert reply["payload"]["status"] == "error"
        assert reply["payload"]["response"]["reason"].startswith("Unauthorized: You do not have permissions to write")
        assert await listener.silent()
    finally:
        await listener.close()
        await pusher.close()


async def test_client_broadcast_self_and_ack(server: Server) -> None:
    """A client broadcast reaches others; the sender sees it only with self:true, and ack:true gets an ok reply."""
    other = await RawClient.open(server.ws_url)
    quiet = await RawClient.open(server.ws_url)
    loud = await RawClient.open(server.ws_url)
    try:
        await other.join("session:a", "tok-a")
        quiet_ref, _ = await quiet.join("session:a", "tok-a")
        loud_ref, _ = await loud.join("session:a", "tok-a", self_=True, ack=True)
        body = {"type": "broadcast", "event": "cursor", "payload": {"x": 1}}
        await quiet.send("realtime:session:a", "broadcast", body, ref=quiet.ref(), join_ref=quiet_ref)
        expected = {"topic": "realtime:session:a", "event": "broadcast", "payload": body, "ref": None}
        assert await other.recv() == expected
        assert await loud.recv() == expected
        assert await quiet.silent()  # self:false, ack:false: nothing back
        ref = loud.ref()
        await loud.send("realtime:session:a", "broadcast", body, ref=ref, join_ref=loud_ref)
        frames = [await loud.recv(), await loud.recv()]
        assert {
            "topic": "realtime:session:a",
            "event": "phx_reply",
            "payload": {"status": "ok", "response": {}},
            "ref": ref,
        } in frames
        assert expected in frames
        assert await other.recv() == expected
        assert await quiet.recv() == expected
    finally:
        for client in (other, quiet, loud):
            await client.close()


async def test_access_token_update(server: Server) -> None:
    """An access_token update is silent on success; an invalid one gets a system error, then phx_close."""
    client = await RawClient.open(server.ws_url)
    try:
        join_ref, _ = await client.join("session:a", "tok-a")
        await client.send(
            "realtime:session:a", "access_token", {"access_token": "tok-tenant"}, ref=client.ref(), join_ref=join_ref
        )
        assert await client.silent()
        await client.send(
            "realtime:session:a", "access_token", {"access_token": "tok-b"}, ref=client.ref(), join_ref=join_ref
        )
        system = await client.recv()
        assert system == {
            "topic": "realtime:session:a",
            "event": "system",
            "payload": {
                "channel": "session:a",
                "extension": "system",
                "message": "Unauthorized: You do not have permissions to read from this Channel topic: session:a",
                "status": "error",
            },
            "ref": None,
        }
        assert await client.recv() == {
            "topic": "realtime:session:a",
            "event": "phx_close",
            "payload": {},
            "ref": join_ref,
        }
        await server.hub.publish("session:a", "transcript_entry", ENTRY)
        assert await client.silent()
    finally:
        await client.close()


async def test_v2_binary_push_goes_out_as_kind_4_to_v2_and_json_to_v1(server: Server) -> None:
    """A kind-3 binary push is delivered as a kind-4 frame to v2 subscribers and as JSON to v1 subscribers."""
    sender = await RawClient.open(server.ws_url, vsn="2.0.0")
    v2 = await RawClient.open(server.ws_url, vsn="2.0.0")
    v1 = await RawClient.open(server.ws_url)
    try:
        join_ref, _ = await sender.join("session:a", "tok-a")
        await v2.join("session:a", "tok-a")
        await v1.join("session:a", "tok-a")
        topic, event, body = b"realtime:session:a", b"cursor", b'{"x":2}'
        header = bytes([3, len(join_ref), 1, len(topic), len(event), 0, 1])
        await sender.ws.send(header + join_ref.encode() + b"9" + topic + event + body)
        frame = await v2.recv_raw()
        assert frame == bytes([4, len(topic), len(event), 0, 1]) + topic + event + body
        assert await v1.recv() == {
            "topic": "realtime:session:a",
            "event": "broadcast",
            "payload": {"type": "broadcast", "event": "cursor", "payload": {"x": 2}},
            "ref": None,
        }
        assert await sender.silent()
    finally:
        for client in (sender, v2, v1):
            await client.close()


async def test_slow_subscriber_is_dropped_without_holding_up_others(small_queue_server: Server) -> None:
    """A socket that stops reading is closed once its queue fills, while a reading subscriber gets everything."""
    slow = await RawClient.open(small_queue_server.ws_url)
    fast = await RawClient.open(small_queue_server.ws_url)
    try:
        await slow.join("session:a", "tok-a")
        await fast.join("session:a", "tok-a")
        slow.ws.transport.pause_reading()  # type: ignore[attr-defined]
        blob = "x" * 500_000  # big frames: kernel buffers absorb only a few, then the 64-frame outbox fills
        received = 0

        async def read_fast() -> None:
            nonlocal received
            while received < 200:
                frame = await fast.recv(within_s=10)
                if frame["event"] == "broadcast":
                    received += 1

        reader = asyncio.create_task(read_fast())
        for i in range(200):
            await small_queue_server.hub.publish("session:a", "blob", {"i": i, "blob": blob})
            for _ in range(1000):  # keep the reading subscriber within 16 frames of the publisher
                if received >= i - 16:
                    break
                await asyncio.sleep(0.001)
        await reader
        assert received == 200
        assert small_queue_server.hub.metrics["dropped_subscribers"] == 1
        assert small_queue_server.hub.subscriber_count("session:a") == 1
    finally:
        slow.ws.transport.abort()  # it never read its close frame: no handshake to wait for
        await fast.close()
