"""SupabaseBroadcaster at the HTTP boundary (httpx.MockTransport): endpoint, batching, retries, bounded queue."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from shared.broadcast.base import Broadcaster
from shared.broadcast.factory import create_broadcaster
from shared.broadcast.local import LocalHub
from shared.broadcast.supabase import SupabaseBroadcaster
from shared.errors import ConfigurationError
from shared.settings import Settings

URL = "https://project-ref.supabase.co"
KEY = "service-role-key"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A fake Realtime REST endpoint answering from a script of responses, then 202."""

    def __init__(self, *script: httpx.Response | type[Exception]) -> None:
        self.script = list(script)
        self.requests: list[httpx.Request] = []
        self.times: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.times.append(time.monotonic())
        if self.script:
            step = self.script.pop(0)
            if isinstance(step, type):
                raise step("scripted failure", request=request)  # type: ignore[call-arg]
            return step
        return httpx.Response(202)

    def messages(self) -> list[dict[str, Any]]:
        return [m for r in self.requests for m in json.loads(r.content)["messages"]]


def make(recorder: Recorder, **kwargs: Any) -> SupabaseBroadcaster:
    client = httpx.AsyncClient(transport=httpx.MockTransport(recorder))
    kwargs.setdefault("backoff_base_s", 0.001)
    return SupabaseBroadcaster(URL, KEY, client=client, **kwargs)


async def test_request_matches_the_documented_endpoint() -> None:
    """One publish becomes POST {url}/realtime/v1/api/broadcast with apikey + Bearer headers and the messages body."""
    recorder = Recorder()
    broadcaster: Broadcaster = make(recorder)
    await broadcaster.start()
    await broadcaster.publish("session:abc", "transcript_entry", {"id": "e1", "text": "Hi."})
    await broadcaster.close()
    assert len(recorder.requests) == 1
    request = recorder.requests[0]
    assert request.method == "POST"
    assert str(request.url) == "https://project-ref.supabase.co/realtime/v1/api/broadcast"
    assert request.headers["apikey"] == KEY
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.content) == {
        "messages": [
            {
                "topic": "session:abc",
                "event": "transcript_entry",
                "payload": {"id": "e1", "text": "Hi."},
                "private": False,
            }
        ]
    }
    assert broadcaster.metrics["sent"] == 1  # type: ignore[attr-defined]


async def test_private_flag_is_sent() -> None:
    """With private=True every message carries "private": true (RLS on realtime.messages applies)."""
    recorder = Recorder()
    broadcaster = make(recorder, private=True)
    await broadcaster.publish("session:abc", "session_status", {"status": "ended"})
    await broadcaster.close()
    assert recorder.messages()[0]["private"] is True


async def test_many_publishes_become_few_requests() -> None:
    """1,000 publishes in a burst go out in batches of at most max_batch, in order, none lost."""
    recorder = Recorder()
    broadcaster = make(recorder, max_batch=100)
    await broadcaster.start()
    for i in range(1000):
        await broadcaster.publish("session:abc", "transcript_partial", {"i": i})
    await broadcaster.close()
    assert [m["payload"]["i"] for m in recorder.messages()] == list(range(1000))
    assert len(recorder.requests) <= 12
    assert all(len(json.loads(r.content)["messages"]) <= 100 for r in recorder.requests)
    assert broadcaster.metrics["sent"] == 1000


async def test_publishes_within_the_window_share_a_request() -> None:
    """Publishes a millisecond apart, inside the batch window, share one request."""
    recorder = Recorder()
    broadcaster = make(recorder, batch_window_ms=50)
    await broadcaster.start()
    for i in range(5):
        await broadcaster.publish("session:abc", "e", {"i": i})
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.15)
    assert len(recorder.requests) == 1
    await broadcaster.close()


async def test_429_with_retry_after_is_honoured() -> None:
    """A 429 with Retry-After: 1 is retried after about one second, then delivered."""
    recorder = Recorder(httpx.Response(429, headers={"Retry-After": "1"}))
    broadcaster = make(recorder)
    await broadcaster.publish("session:abc", "e", {})
    for _ in range(300):
        if broadcaster.metrics["sent"]:
            break
        await asyncio.sleep(0.01)
    assert broadcaster.metrics == {"sent": 1, "dropped": 0, "retried": 1, "failed": 0, "requests": 2}
    assert recorder.times[1] - recorder.times[0] >= 0.95
    await broadcaster.close()


async def test_5xx_then_success() -> None:
    """500 and 503 answers are retried with backoff until a 202."""
    recorder = Recorder(httpx.Response(500), httpx.Response(503), httpx.Response(502))
    broadcaster = make(recorder)
    await broadcaster.publish("session:abc", "e", {"n": 1})
    await broadcaster.close()
    assert broadcaster.metrics["sent"] == 1 and broadcaster.metrics["retried"] == 3
    assert len({r.content for r in recorder.requests}) == 1  # the same batch each time


@pytest.mark.parametrize("error", [httpx.ReadTimeout, httpx.ConnectError, httpx.ConnectTimeout])
async def test_timeouts_and_connection_errors_are_retried(error: type[Exception]) -> None:
    """Timeouts and connection errors are retried like a 5xx."""
    recorder = Recorder(error, error)
    broadcaster = make(recorder)
    await broadcaster.publish("session:abc", "e", {})
    await broadcaster.close()
    assert broadcaster.metrics["sent"] == 1 and broadcaster.metrics["retried"] == 2


async def test_permanent_failure_is_counted_and_never_raised() -> None:
    """A Realtime that keeps failing costs max_retries retries, then the batch is counted failed; publish never raises."""
    recorder = Recorder(*[httpx.Response(503)] * 50)
    broadcaster = make(recorder, max_retries=3)
    await broadcaster.publish("session:abc", "e", {})
    await broadcaster.close()
    assert broadcaster.metrics["failed"] == 1 and broadcaster.metrics["sent"] == 0
    assert len(recorder.requests) == 4


async def test_non_retryable_4xx_fails_at_once() -> None:
    """A 401 or 422 is not retried: the batch is counted failed and later broadcasts still go out."""
    recorder = Recorder(httpx.Response(401, json={"message": "Invalid API key"}))
    broadcaster = make(recorder)
    await broadcaster.publish("session:abc", "e", {"n": 1})
    await asyncio.sleep(0.05)
    await broadcaster.publish("session:abc", "e", {"n": 2})
    await broadcaster.close()
    assert (
        broadcaster.metrics["failed"] == 1 and broadcaster.metrics["sent"] == 1 and broadcaster.metrics["retried"] == 0
    )


async def test_full_queue_drops_without_blocking_or_raising() -> None:
    """When Realtime is down and the queue is full, publish returns at once, drops and counts."""
    gate = asyncio.Event()

    async def stalled(request: httpx.Request) -> httpx.Response:
        await gate.wait()
        return httpx.Response(202)

    client = httpx.AsyncClient(transport=httpx.MockTransport(stalled))
    broadcaster = SupabaseBroadcaster(URL, KEY, client=client, queue_size=10, max_batch=1, close_timeout_s=0.2)
    await broadcaster.start()
    started = time.monotonic()
    for i in range(100):
        await broadcaster.publish("session:abc", "e", {"i": i})
    assert time.monotonic() - started < 0.5
    assert broadcaster.metrics["dropped"] >= 89
    await broadcaster.close()  # bounded: gives up after close_timeout_s
    assert time.monotonic() - started < 2


async def test_publish_after_close_is_dropped() -> None:
    """publish() after close() is dropped and counted, not raised."""
    broadcaster = make(Recorder())
    await broadcaster.close()
    await broadcaster.publish("session:abc", "e", {})
    assert broadcaster.metrics["dropped"] == 1


async def test_factory_picks_the_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """create_broadcaster: local -> LocalHub, supabase -> SupabaseBroadcaster, supabase without a key -> error."""
    for name in ("SUPABASE_URL", "SUPABASE_SERVICE_ROLE_KEY", "BROADCASTER", "SUPABASE_PRIVATE_TOPICS"):
        monkeypatch.delenv(name, raising=False)
    assert isinstance(create_broadcaster(Settings(_env_file=None, broadcaster="local")), LocalHub)  # type: ignore[call-arg]
    chosen = create_broadcaster(
        Settings(
            _env_file=None,
            broadcaster="auto",
            supabase_url=URL,
            supabase_service_role_key=KEY,
            supabase_private_topics=True,
        )  # type: ignore[call-arg]
    )
    assert isinstance(chosen, SupabaseBroadcaster) and chosen.private and chosen.name == "supabase"
    await chosen.close()
    with pytest.raises(ConfigurationError):
        create_broadcaster(Settings(_env_file=None, broadcaster="supabase"))  # type: ignore[call-arg]
