"""The live path's audio work (decoding, levels, speech detection, the engine's input) on one thread, off the loop.

`asyncio.to_thread` spread it over the default pool: under load six threads ran small numpy and Silero steps at
once, each taking the GIL back and forth with the event loop, which then answered requests late while the process
used 1.3 of 2 cores (measured: 400 interviews, main thread 67% busy, six pool threads ~10% each). One thread
does the same work without the contention; Silero's own run releases the GIL either way.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

_AUDIO = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audio")


async def off_loop(work: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
    """Run `work` on the audio thread and wait for it without blocking the event loop."""
    return await asyncio.get_running_loop().run_in_executor(_AUDIO, functools.partial(work, *args, **kwargs))
