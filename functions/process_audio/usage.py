"""Engine use that no stored progress carries (partials), kept in memory and added to the store's per-day
counters every few seconds.

Audio taken in and the engine time of finals are added in the same transaction as the speaker stream's progress
(`Store.save_stream(usage=...)`): exactly once, whatever crashes. A partial stores nothing, and a store write per
partial would add a round trip for a number nobody reads at that moment; a crash loses at most the last few
seconds of partials' counts.
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
