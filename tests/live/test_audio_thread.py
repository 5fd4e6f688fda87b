"""The live path's audio work runs on one thread of its own: never on the event loop, never two at once."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

from functions.process_audio.audio_thread import off_loop


async def test_audio_work_runs_one_at_a_time_on_its_own_thread() -> None:
    """Eight pieces of work submitted together run on one thread that is not the loop's, one after another."""
    seen: list[tuple[str, float, float]] = []

    def work(seconds: float) -> str:
        start = time.monotonic()
        time.sleep(seconds)
        seen.append((threading.current_thread().name, start, time.monotonic()))
        return "done"

    results = await asyncio.gather(*(off_loop(work, 0.01) for _ in range(8)))
    assert results == ["done"] * 8
    names = {name for name, _, _ in seen}
    assert len(names) == 1 and threading.current_thread().name not in names
    spans = sorted((start, end) for _, start, end in seen)
    assert all(later_start >= end for (_, end), (later_start, _) in itertools.pairwise(spans))
