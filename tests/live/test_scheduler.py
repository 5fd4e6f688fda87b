"""RunScheduler: one run at a time per speaker, bursts coalesced, a bounded number of runs at once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from functions.process_audio.scheduler import RunScheduler
from shared.models import Session, SessionStatus


def session(session_id: str) -> Session:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Session(id=session_id, tenant_id="t", status=SessionStatus.ACTIVE, created_at=now, last_activity_at=now)


class Recorder:
    """A run that takes a while and remembers what ran when."""

    def __init__(self, delay: float = 0.02) -> None:
        self.delay = delay
        self.calls: list[tuple[str, str, bool]] = []
        self.running: set[tuple[str, str]] = set()
        self.most_at_once = 0
        self.overlaps_per_speaker = 0

    async def __call__(self, s: Session, speaker: str, final: bool) -> str:
        key = (s.id, speaker)
        if key in self.running:
            self.overlaps_per_speaker += 1
        self.running.add(key)
        self.most_at_once = max(self.most_at_once, len(self.running))
        self.calls.append((s.id, speaker, final))
        await asyncio.sleep(self.delay)
        self.running.discard(key)
        return f"{s.id}/{speaker}#{len(self.calls)}"


async def test_a_burst_for_one_speaker_costs_at_most_two_runs() -> None:
    """Requests arriving while a run goes are folded into one more run, never one run each."""
    run = Recorder()
    scheduler = RunScheduler(run, workers=4)
    futures = [scheduler.request(session("s"), "a") for _ in range(10)]
    await asyncio.sleep(0)  # the first run has started
    futures += [scheduler.request(session("s"), "a") for _ in range(10)]
    results = await asyncio.gather(*futures)
    assert len(run.calls) == 2
    assert run.overlaps_per_speaker == 0
    assert results[0] == "s/a#1" and results[-1] == "s/a#2", "a request is answered by a run that began after it"


async def test_runs_for_many_speakers_never_exceed_the_worker_bound() -> None:
    """With 2 workers, 6 speakers are all processed, never more than 2 at once."""
    run = Recorder()
    scheduler = RunScheduler(run, workers=2)
    await asyncio.gather(*(scheduler.request(session("s"), f"speaker{i}") for i in range(6)))
    assert run.most_at_once == 2
    assert sorted(c[1] for c in run.calls) == [f"speaker{i}" for i in range(6)]
    assert scheduler.busy == 0


async def test_a_final_request_joining_a_queued_one_makes_it_final() -> None:
    """A flush asked for while a run is queued is not lost: the queued run becomes final."""
    run = Recorder()
    scheduler = RunScheduler(run, workers=1)
    first = scheduler.request(session("s"), "a")
    queued = scheduler.request(session("s"), "b")
    final = scheduler.request(session("s"), "b", final=True)
    assert queued is final
    await asyncio.gather(first, final)
    assert run.calls == [("s", "a", False), ("s", "b", True)]


async def test_a_failed_run_reaches_its_waiters_and_the_next_request_runs_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A run that raises is logged and raised to whoever waits; the speaker is not stuck."""
    attempts = 0

    async def flaky(s: Session, speaker: str, final: bool) -> str:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("store went away")
        return "ok"

    scheduler = RunScheduler(flaky, workers=1)
    with pytest.raises(RuntimeError, match="store went away"):
        await scheduler.request(session("s"), "a")
    assert "its audio stays pending" in caplog.text
    assert await scheduler.request(session("s"), "a") == "ok"


async def test_drain_waits_for_queued_runs() -> None:
    """Shutdown lets what was asked for finish."""
    run = Recorder(delay=0.01)
    scheduler = RunScheduler(run, workers=1)
    for i in range(3):
        scheduler.request(session("s"), f"speaker{i}")
    await scheduler.drain(within_s=5)
    assert len(run.calls) == 3
    assert scheduler.busy == 0


def test_zero_workers_is_refused() -> None:
    """A pool without workers could never process anything."""
    with pytest.raises(ValueError, match="at least 1"):
        RunScheduler(Recorder(), workers=0)
