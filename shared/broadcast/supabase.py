"""Broadcast through Supabase Realtime's REST API: one pooled client, small batches, retries, a bounded queue.

`publish()` only enqueues: it never blocks on the network and never raises, so a Realtime outage cannot fail the
store write that came before it. A background task drains the queue, sending up to `max_batch` messages per
`POST {url}/realtime/v1/api/broadcast` once `batch_window_ms` has passed since the first of them, and retries
429 (honouring `Retry-After`), 5xx, timeouts and connection errors with exponential backoff and full jitter.
What cannot be queued (`dropped`) or delivered (`failed`) is logged and counted in `metrics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from typing import Any, Final

import httpx

logger = logging.getLogger(__name__)

RETRYABLE_STATUS: Final = frozenset({408, 425, 429, 500, 502, 503, 504})


class _Closed:
    pass


_STOP: Final = _Closed()


def _retry_after_s(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class SupabaseBroadcaster:
    name = "supabase"

    def __init__(
        self,
        url: str,
        service_role_key: str,
        *,
        private: bool = False,
        batch_window_ms: float = 5,
        max_batch: int = 100,
        queue_size: int = 10_000,
        max_retries: int = 5,
        client: httpx.AsyncClient | None = None,
        backoff_base_s: float = 0.2,
        backoff_max_s: float = 10.0,
        request_timeout_s: float = 10.0,
        close_timeout_s: float = 5.0,
    ) -> None:
        self.endpoint = url.rstrip("/") + "/realtime/v1/api/broadcast"
        self.private = private
        self.batch_window_s = batch_window_ms / 1000
        self.max_batch = max_batch
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.close_timeout_s = close_timeout_s
        self._headers = {
            "apikey": service_role_key,
            "Authorization": f"Bearer {service_role_key}",
            "Content-Type": "application/json",
        }
        self._owns_client = client is None
        self._client = client or httpx.AsyncClient(
            timeout=httpx.Timeout(request_timeout_s),
            limits=httpx.Limits(max_connections=10, max_keepalive_connections=10),
        )
        self._queue: asyncio.Queue[dict[str, Any] | _Closed] = asyncio.Queue(maxsize=queue_size)
        self._worker: asyncio.Task[None] | None = None
        self._closed = False
        self.metrics: dict[str, int] = {"sent": 0, "dropped": 0, "retried": 0, "failed": 0, "requests": 0}

    async def start(self) -> None:
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._run(), name="supabase-broadcaster")

    async def publish(self, topic: str, event: str, payload: dict[str, Any]) -> None:
        """Enqueue one broadcast (topic without `realtime:`); when the queue is full, drop it with a log line."""
        if self._closed:
            self._drop(topic, event, "the broadcaster is closed")
            return
        if self._worker is None:
            await self.start()
        message = {"topic": topic, "event": event, "payload": payload, "private": self.private}
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self._drop(topic, event, f"the queue is full ({self._queue.maxsize})")

    def _drop(self, topic: str, event: str, why: str) -> None:
        self.metrics["dropped"] += 1
        logger.warning("dropped realtime broadcast %s on %s: %s", event, topic, why)

    async def close(self) -> None:
        """Send what is queued, waiting at most `close_timeout_s`, then release the HTTP client."""
        if self._closed:
            return
        self._closed = True
        worker = self._worker
        if worker is not None and not worker.done():
            with contextlib.suppress(asyncio.QueueFull):
                self._queue.put_nowait(_STOP)
            try:
                async with asyncio.timeout(self.close_timeout_s):
                    await asyncio.shield(worker)
            except TimeoutError:
                worker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker
        left = self._queue.qsize()
        while not self._queue.empty():
            if not isinstance(self._queue.get_nowait(), _Closed):
                self.metrics["dropped"] += 1
        if left:
            logger.warning("closed with realtime broadcasts still queued; dropped them")
        if self._owns_client:
            await self._client.aclose()

    # -- worker --------------------------------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            if isinstance(first, _Closed):
                return
            batch = [first]
            stop = False
            deadline = loop.time() + self.batch_window_s
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0 or self._closed:
                        break
                    try:
                        async with asyncio.timeout(remaining):
                            item = await self._queue.get()
                    except TimeoutError:
                        break
                if isinstance(item, _Closed):
                    stop = True
                    break
                batch.append(item)
            try:
                await self._send(batch)
            except Exception:  # never let the worker die: later broadcasts must still go out
                logger.exception("realtime broadcast worker error")
                self.metrics["failed"] += len(batch)
            if stop:  # close() queued the marker last: everything before it has been sent
                return

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, max(self.backoff_max_s, 60.0))
        ceiling = min(self.backoff_max_s, self.backoff_base_s * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        body = {"messages": batch}
        attempt = 0
        while True:
            retry_after: float | None = None
            why: str
            try:
                self.metrics["requests"] += 1
                response = await self._client.post(self.endpoint, json=body, headers=self._headers)
            except httpx.TimeoutException as exc:
                why = f"timeout ({type(exc).__name__})"
            except httpx.TransportError as exc:
                why = f"connection error ({type(exc).__name__}: {exc})"
            else:
                if response.is_success:
                    self.metrics["sent"] += len(batch)
                    return
                why = f"HTTP {response.status_code}"
                if response.status_code not in RETRYABLE_STATUS:
                    self._fail(batch, f"{why}: {response.text[:200]}")
                    return
                retry_after = _retry_after_s(response.headers.get("retry-after"))
            if attempt >= self.max_retries:
                self._fail(batch, f"{why} after {attempt + 1} attempts")
                return
            delay = self._backoff(attempt, retry_after)
            attempt += 1
            self.metrics["retried"] += 1
            logger.info("realtime broadcast %s; retry %d in %.2f s", why, attempt, delay)
            await asyncio.sleep(delay)

    def _fail(self, batch: list[dict[str, Any]], why: str) -> None:
        self.metrics["failed"] += len(batch)
        topics = sorted({str(message["topic"]) for message in batch})
        logger.error("gave up on %d realtime broadcast(s) to %s: %s", len(batch), ", ".join(topics[:5]), why)
