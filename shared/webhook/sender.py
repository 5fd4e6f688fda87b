"""Delivers the webhook outbox: each closed session's transcript, signed, POSTed to its tenant's URL.

Deliveries are rows in the store (`Store.close_session` writes them), so a restart loses none. Whoever sends
takes rows with a short lease, so two processes never send one row at once; a failed attempt is tried again with
growing delays (30 s doubling, at most 6 h apart) and given up after MAX_ATTEMPTS (about two days). At least once:
a receiver may see a delivery again (after a timeout that hid its 2xx) and drops it by its `id`. Redirects are
not followed: a 3xx is a failed attempt, never a request to wherever it points.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from datetime import datetime, timedelta

import httpx

from shared.models import WebhookDelivery
from shared.store.base import Store
from shared.webhook.signature import HEADER, sign
from shared.webhook.target import refusal

log = logging.getLogger("bridge.webhook")

MAX_ATTEMPTS = 15
RETRY_BASE_S = 30.0
RETRY_CAP_S = 6 * 3600.0
LEASE_S = 60.0  # an attempt holds its row this long at most (the request times out well before)
PAGE = 100
TIMEOUT_S = 10.0


def next_attempt(attempts_made: int, now: datetime) -> datetime | None:
    """When to try again after `attempts_made` failed attempts; None: give up."""
    if attempts_made >= MAX_ATTEMPTS:
        return None
    return now + timedelta(seconds=min(RETRY_CAP_S, RETRY_BASE_S * 2 ** (attempts_made - 1)))


class WebhookSender:
    """Sends due deliveries; `deliver_soon` sends one session's right away without holding up the caller."""

    def __init__(self, store: Store, *, allow_private: bool = False, client: httpx.AsyncClient | None = None) -> None:
        self.store = store
        self.allow_private = allow_private
        self._client = client or httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False)
        self._tasks: set[asyncio.Task[int]] = set()

    async def deliver_due(self, now: datetime, *, session_id: str | None = None, due_by: datetime | None = None) -> int:
        """Attempt every delivery due by `due_by` (default `now`), or one session's; returns how many arrived."""
        taken = await self.store.claim_webhook_deliveries(
            due_by or now, now + timedelta(seconds=LEASE_S), PAGE, session_id=session_id
        )
        delivered = 0
        for delivery in taken:
            error = await self._attempt(delivery)
            attempts = delivery.attempts + 1
            retry_at = None if error is None else next_attempt(attempts, now)
            if error is not None:
                log.warning("webhook %s for session %s: attempt %d failed: %s%s", delivery.id, delivery.session_id,
                            attempts, error, "" if retry_at else "; given up")  # fmt: skip
            await self.store.finish_webhook_delivery(
                delivery.id, delivered=error is None, at=now, next_attempt_at=retry_at, error=error
            )
            delivered += error is None
        return delivered

    def deliver_soon(self, session_id: str, now: datetime, due_by: datetime) -> None:
        """Send a just-closed session's delivery in the background (a slow receiver must not hold up `end`)."""
        task = asyncio.create_task(self.deliver_due(now, session_id=session_id, due_by=due_by))
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[int]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a webhook delivery failed to run; the outbox keeps it", exc_info=task.exception())

    async def _attempt(self, delivery: WebhookDelivery) -> str | None:
        """One POST; None when the receiver answered 2xx, else what went wrong."""
        if not delivery.url or not delivery.secret:
            return "the tenant has no webhook URL or key any more"
        refused = await refusal(delivery.url, allow_private=self.allow_private)
        if refused is not None:
            return refused
        session = await self.store.get_session(delivery.session_id, delivery.tenant_id)
        if session is None:
            return "the session was deleted"
        entries = await self.store.list_entries(session.id)
        body = json.dumps(
            {
                "event": delivery.event,
                "id": delivery.id,
                "session": session.to_json(),
                "entries": [entry.to_json() for entry in entries],
            },
            separators=(",", ":"),
        ).encode()
        headers = {"content-type": "application/json", HEADER: sign(delivery.secret, body, int(time.time()))}
        try:
            response = await self._client.post(delivery.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"
        if response.is_success:
            return None
        if response.is_redirect:
            return f"HTTP {response.status_code} redirect (not followed)"
        return f"HTTP {response.status_code}"

    async def aclose(self, within_s: float = 10.0) -> None:
        """Let background deliveries finish (bounded; the outbox keeps what did not), then close the client."""
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=within_s)
            for task in late:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._client.aclose()
