"""When each speaker's pending audio is processed: one run at a time per speaker, coalesced, on a bounded pool.

A chunk's request only asks for a run and answers; it waits for one only when the client asked (`wait_ms`).
Requests that arrive while a speaker's run is still queued join it; one that arrives while the run is going
asks for one more run after it. So a burst of chunks costs one or two runs, never a task per chunk, and memory
does not grow with a speaker's backlog: the backlog waits in the store, which is the queue. At most `workers`
runs go at once across all speakers; the others wait for a slot, their chunks already acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from shared.models import Session

log = logging.getLogger("bridge.live")

Result = TypeVar("Result")
Key = tuple[str, str]  # (session id, speaker)


@dataclass
class _Queued(Generic[Result]):
    session: Session
    final: bool
    done: asyncio.Future[Result]


def _retrieve(future: asyncio.Future[Result]) -> None:
    """A run that failed was logged by the driver; nobody has to await its future for that."""
    if not future.cancelled():
        future.exception()


class RunScheduler(Generic[Result]):
    """Runs `run(session, speaker, final)` for whoever asks, per speaker in order, at most `workers` at once."""

    def __init__(self, run: Callable[[Session, str, bool], Awaitable[Result]], workers: int) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._run = run
        self._slots = asyncio.Semaphore(workers)
        self._queued: dict[Key, _Queued[Result]] = {}
        self._drivers: dict[Key, asyncio.Task[None]] = {}
        self.runs = 0

    def request(self, session: Session, speaker: str, *, final: bool = False) -> asyncio.Future[Result]:
        """Ask for a run that starts after this call; the future resolves with that run's result."""
        key = (session.id, speaker)
        queued = self._queued.get(key)
        if queued is None:
            future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
            future.add_done_callback(_retrieve)
            queued = self._queued[key] = _Queued(session, final, future)
        else:
            queued.session, queued.final = session, queued.final or final
        if key not in self._drivers:
            self._drivers[key] = asyncio.create_task(self._drive(key))
        return queued.done

    @property
    def busy(self) -> int:
        """Speakers with a run going or waiting for a slot."""
        return len(self._drivers)

    async def _drive(self, key: Key) -> None:
        try:
            while key in self._queued:
                async with self._slots:
                    queued = self._queued.pop(key, None)
                    if queued is None:
                        break
                    self.runs += 1
                    try:
                        result = await self._run(queued.session, key[1], queued.final)
                    except asyncio.CancelledError:
                        queued.done.cancel()
                        raise
                    except Exception as exc:
                        log.error("processing %s/%s failed; its audio stays pending", *key, exc_info=exc)
                        queued.done.set_exception(exc)
                    else:
                        queued.done.set_result(result)
        finally:
            self._drivers.pop(key, None)

    async def drain(self, within_s: float) -> None:
        """Let queued and running runs finish (shutdown); cancel what is left after `within_s` seconds."""
        loop = asyncio.get_running_loop()
        drivers = [task for task in self._drivers.values() if task.get_loop() is loop]  # others are not ours to await
        if not drivers:
            return
        _, late = await asyncio.wait(drivers, timeout=within_s)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
