"""Per-credential rate limits (token buckets, in process): a runaway client gets 429 with Retry-After.

Keyed by who is calling (the session for session tokens, else the tenant), not by IP: behind Fly's proxy every
client shares a few addresses. Limits are generous, far above what a browser sending 2 s chunks needs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from shared.credentials import Principal
from shared.errors import RateLimited


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: int


CHUNKS = Rate(per_second=20.0, burst=60)  # per session (or tenant key), all speakers together
SESSIONS = Rate(per_second=5.0, burst=30)  # session creation per tenant


class RateLimiter:
    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self._buckets: dict[tuple[str, str], tuple[float, float]] = {}

    def check(self, kind: str, principal: Principal, rate: Rate) -> None:
        """Take one token for `principal` in bucket `kind`, or raise RateLimited with the wait in seconds."""
        if not self.enabled:
            return
        key = (kind, principal.session_id or principal.tenant_id or principal.kind.value)
        now = time.monotonic()
        tokens, last = self._buckets.get(key, (float(rate.burst), now))
        tokens = min(float(rate.burst), tokens + (now - last) * rate.per_second)
        if tokens < 1.0:
            wait = math.ceil((1.0 - tokens) / rate.per_second)
            self._buckets[key] = (tokens, now)
            raise RateLimited(f"too many requests; retry in {wait} s", retry_after=max(1, wait))
        self._buckets[key] = (tokens - 1.0, now)
        if len(self._buckets) > 100_000:
            self._buckets.clear()
