"""Usage counted as the live path works (audio taken in, audio sent to the engine, engine calls), kept in memory
and added to the store's per-day counters every few seconds.

A store write per chunk would add a round trip to every run for a number nobody reads at that moment. A crash
loses at most the last few seconds of counts (the audio and entries themselves are not affected).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from datetime import date

from shared.store.base import Store

log = logging.getLogger("bridge.usage")

Key = tuple[str, date]  # (tenant id, UTC day)


class UsageMeter:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._counts: defaultdict[Key, list[int]] = defaultdict(lambda: [0, 0, 0])
        self._lock = asyncio.Lock()

    def count(self, tenant_id: str, day: date, *, audio_ms: int = 0, engine_ms: int = 0, engine_calls: int = 0) -> None:
        counts = self._counts[(tenant_id, day)]
        counts[0] += audio_ms
        counts[1] += engine_ms
        counts[2] += engine_calls

    async def flush(self) -> None:
        """Add what was counted since the last flush to the store (what fails to be written is kept for next)."""
        async with self._lock:
            pending, self._counts = self._counts, defaultdict(lambda: [0, 0, 0])
            for (tenant_id, day), (audio_ms, engine_ms, engine_calls) in pending.items():
                try:
                    await self.store.add_usage(
                        tenant_id, day, audio_ms=audio_ms, engine_ms=engine_ms, engine_calls=engine_calls
                    )
                except Exception:
                    log.exception("usage of tenant %s could not be stored; kept for the next flush", tenant_id)
                    self.count(tenant_id, day, audio_ms=audio_ms, engine_ms=engine_ms, engine_calls=engine_calls)

    async def flush_every(self, interval_s: float) -> None:
        """Flush at an interval until cancelled (the server), then once more."""
        try:
            while True:
                await asyncio.sleep(interval_s)
                await self.flush()
        finally:
            await self.flush()
