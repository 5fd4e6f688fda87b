"""The broadcaster failing mid-interview: Supabase Realtime's REST endpoint answering 429 or 5xx, and viewers' sockets
to the local hub dropped. Chunks are still acknowledged and stored, every entry is readable through GET transcript,
nothing escapes into a request or a run, and once the broadcaster answers again new lines go out live.

Supabase is replaced at its HTTP boundary only (an httpx transport playing `POST /realtime/v1/api/broadcast`, error
bodies as Supabase's gateway sends them); the local hub runs for real behind uvicorn, with realtime-py viewers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from bridge.app import create_app
from shared.broadcast.supabase import SupabaseBroadcaster
from shared.settings import Settings
from tests.faults.support import Tally, end_and_read, keys, new_session, post_until_stored, speech_stream, transcript
from tests.isolation.world import in_process, seed_api_key, serve
from tests.realtime.helpers import PySubscriber

PROJECT = "https://project-ref.supabase.test"
SERVICE_KEY = "service-role-key"
SPEAKERS = ("candidate", "interviewer")
WAIT_MS = 3000  # each chunk waits for the entries it completes, so the test knows when each line was made
HOLD_S = 1.0  # how long the fault lasts after the chunks posted during it

REALTIME_FAULTS: dict[str, Callable[[], httpx.Response]] = {
    "429 Too Many Requests, Retry-After: 1": lambda: httpx.Response(
        429, json={"message": "API rate limit exceeded"}, headers={"Retry-After": "1"}
    ),
    "500 Internal Server Error": lambda: httpx.Response(500, json={"message": "Internal Server Error"}),
    "503 Service Unavailable": lambda: httpx.Response(503, json={"message": "Service Unavailable"}),
}


class FakeRealtimeRest:
    """`POST {project}/realtime/v1/api/broadcast` answering a fault while one is set, else 202 Accepted."""

    def __init__(self) -> None:
        self.fault: str | None = None
        self.injected = 0
        self.delivered: list[dict[str, Any]] = []  # the messages of requests answered 202, in order

    def __call__(self, request: httpx.Request) -> httpx.Response:
        assert str(request.url) == f"{PROJECT}/realtime/v1/api/broadcast"
        assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"
        if self.fault is not None:
            self.injected += 1
            return REALTIME_FAULTS[self.fault]()
        self.delivered += json.loads(request.content)["messages"]
        return httpx.Response(202)

    def events(self, event: str) -> list[dict[str, Any]]:
        return [message["payload"] for message in self.delivered if message["event"] == event]


def errors_logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Errors the bridge logged (a viewer's own client library may complain of its cut socket: not the bridge)."""
    return [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and not r.name.startswith("realtime.")
    ]


async def post_phase(
    client: httpx.AsyncClient, token: str, session_id: str, sequences: range, tally: Tally
) -> list[dict[str, Any]]:
    """Both speakers' chunks of `sequences`, each answered `accepted` with the entries it completed."""
    made: list[dict[str, Any]] = []
    chunks = speech_stream()
    for sequence in sequences:
        for speaker in SPEAKERS:
            answer = await post_until_stored(
                client, token, session_id, speaker, sequence, chunks[sequence], tally, wait_ms=WAIT_MS
            )
            assert answer["status"] == "accepted", answer
            made += answer["entries"]
    return made


@pytest.mark.parametrize("fault", list(REALTIME_FAULTS))
async def test_supabase_realtime_failing_costs_no_entry(
    fault: str,
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
    report: Callable[[Tally], None],
) -> None:
    """While Supabase Realtime answers 429 or 5xx, chunks are acknowledged and their entries stored and readable, no
    error escapes; once it answers again the held lines and every new one are broadcast, in order, none dropped."""
    caplog.set_level(logging.INFO)
    realtime = FakeRealtimeRest()
    tally = Tally(f"broadcaster: Supabase Realtime {fault}")
    half = len(speech_stream()) // 2 + 1
    async with httpx.AsyncClient(transport=httpx.MockTransport(realtime)) as http:
        broadcaster = SupabaseBroadcaster(PROJECT, SERVICE_KEY, client=http)  # the production retry policy
        async with in_process(create_app(make_settings(), broadcaster=broadcaster)) as client:
            api_key = await seed_api_key(client.app.state.services)  # type: ignore[attr-defined]
            session_id, token = await new_session(client, api_key, tally, SPEAKERS)
            realtime.fault = fault
            during = await post_phase(client, token, session_id, range(half), tally)
            assert during, "no line was made while Realtime failed"
            stored = (await transcript(client, token, session_id, tally))["entries"]
            assert keys(stored) == keys(during)  # stored and readable, whatever Realtime says
            await asyncio.sleep(HOLD_S)
            assert realtime.events("transcript_entry") == []
            realtime.fault = None  # Realtime answers again
            after = await post_phase(client, token, session_id, range(half, len(speech_stream())), tally)
            assert after, "no line was made after Realtime recovered"
            final = await end_and_read(client, token, session_id, tally)
            await wait_until(lambda: bool(realtime.events("session_status")), within_s=10)
    tally.injected = realtime.injected
    delivered = [entry["id"] for entry in realtime.events("transcript_entry")]
    tally.settle(session_id, keys(during + after), keys(final["entries"]))
    report(tally)
    assert realtime.injected >= 1
    assert {e["id"] for e in after} <= set(delivered)  # new lines are broadcast once Realtime answers again
    assert delivered == [e["id"] for e in during + after]  # and the held ones too, in the order they were made
    assert realtime.events("session_status") == [{"session_id": session_id, "status": "ended"}]
    assert realtime.delivered[-1]["event"] == "session_status"
    assert broadcaster.metrics["failed"] == broadcaster.metrics["dropped"] == 0, broadcaster.metrics
    assert keys(final["entries"]) == keys(during + after)
    assert tally.lost == 0
    assert errors_logged(caplog) == []


async def test_dropped_viewer_sockets_cost_no_entry(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture, report: Callable[[Tally], None]
) -> None:
    """A viewer's socket to the local hub cut mid-interview (no close frame): chunks are still acknowledged, the other
    viewer gets every line, nothing escapes, the viewer that reconnects gets the new lines, and GET transcript has
    all of them."""
    tally = Tally("broadcaster: a viewer's hub socket cut")
    chunks = speech_stream()
    app = create_app(make_settings(stt_engine="simulate"))
    async with serve(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        api_key = await seed_api_key(app.state.services)
        session_id, token = await new_session(client, api_key, tally, SPEAKERS)
        realtime_url, topic = f"http://127.0.0.1:{port}/realtime/v1", f"session:{session_id}"
        hub = app.state.services.hub
        steady = await PySubscriber.start(realtime_url, topic, apikey=token)
        cut = await PySubscriber.start(realtime_url, topic, apikey=token)
        await wait_until(lambda: hub.subscriber_count(topic) == 2)

        before = await post_phase(client, token, session_id, range(3), tally)
        connection = cut.client._ws_connection
        assert connection is not None
        connection.transport.abort()  # the network goes: no close frame, the hub finds a dead socket
        tally.injected += 1
        await wait_until(lambda: hub.subscriber_count(topic) == 1)
        while_cut = await post_phase(client, token, session_id, range(3, 5), tally)

        rejoined = await PySubscriber.start(realtime_url, topic, apikey=token)
        await wait_until(lambda: hub.subscriber_count(topic) == 2)
        after = await post_phase(client, token, session_id, range(5, len(chunks)), tally)
        final = await end_and_read(client, token, session_id, tally)

        made = before + while_cut + after
        assert before and after, (before, while_cut, after)
        steady_got = await lines(steady, len(made) + 1)
        rejoined_got = await lines(rejoined, len(after) + 1)
        await steady.close()
        await rejoined.close()
        await cut.close()
    tally.settle(session_id, keys(made), keys(final["entries"]))
    report(tally)
    assert steady_got == [("transcript_entry", e["id"]) for e in made] + [("session_status", "ended")]
    assert rejoined_got == [("transcript_entry", e["id"]) for e in after] + [("session_status", "ended")]
    assert keys(final["entries"]) == keys(made)  # a viewer that missed lines reads them here
    assert tally.lost == 0
    assert errors_logged(caplog) == []


async def wait_until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def lines(viewer: PySubscriber, count: int) -> list[tuple[str, str]]:
    """The first `count` broadcasts a viewer got: (event, entry id or session status)."""
    got: list[tuple[str, str]] = []
    while len(got) < count:
        message = await viewer.next(within_s=10)
        payload = message["payload"]
        if message["event"] == "transcript_entry":
            got.append(("transcript_entry", payload["id"]))
        elif message["event"] == "session_status":
            got.append(("session_status", payload["status"]))
    return got
