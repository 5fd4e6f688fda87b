"""What every HTTP request gets, whichever route it reaches (404s included): an id, security headers, a deadline
for its body, and one access line in the logs.

It wraps the Litestar app itself rather than sitting in its middleware stack, because Litestar runs route
middleware only on matched routes and an unknown path's 404 needs the headers too.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Final

from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import (
    HTTPScope,
    LifeSpanReceive,
    LifeSpanScope,
    LifeSpanSend,
    Message,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)

from bridge.logs import request_id
from bridge.realtime.redact import redact_query
from shared.errors import RequestTimeout
from shared.settings import Settings

access_log = logging.getLogger("bridge.access")

_GIVEN_ID: Final = re.compile(r"[A-Za-z0-9._:-]{1,128}")  # a caller's own X-Request-Id is kept when it looks sane
SUPABASE_JS_CDN_ORIGIN: Final = "https://cdn.jsdelivr.net"

# A made id is this process's random prefix and a counter: as unique as a uuid4 and without its system call per
# request (on the event loop, any system call waits to take the GIL back from the audio threads)
_ID_PREFIX: Final = os.urandom(8).hex()
_id_counter = itertools.count()


def new_request_id() -> str:
    return f"{_ID_PREFIX}{next(_id_counter):016x}"


def content_security_policy(settings: Settings) -> str:
    """What the demo page needs and nothing more: its own files, supabase-js from the CDN when `npm ci` did not run,
    the API and realtime socket on this origin, and a Supabase project when one is configured."""
    connect = ["'self'"]
    if settings.supabase_url:
        https = settings.supabase_url.rstrip("/")
        connect += [https, "wss://" + https.split("://", 1)[-1]]
    directives = {
        "default-src": "'self'",
        "script-src": f"'self' {SUPABASE_JS_CDN_ORIGIN}",
        "connect-src": " ".join(connect),
        "img-src": "'self' data:",
        "media-src": "'self' blob:",
        "worker-src": "'self' blob:",
        "object-src": "'none'",
        "base-uri": "'none'",
        "form-action": "'self'",
        "frame-ancestors": "'none'",
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def security_headers(settings: Settings) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", content_security_policy(settings).encode()),
    ]


def _header(scope: HTTPScope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value).decode("latin-1")
    return None


@dataclass(frozen=True)
class RequestGuard:
    """Runs on the event loop for every request, so each step is kept cheap (docs/benchmarks.md): one timer per
    request for the body's deadline, the id from a counter, the access line written by a thread of its own."""

    headers: list[tuple[bytes, bytes]]
    body_timeout_s: float

    async def __call__(
        self, app: Callable[[HTTPScope, Receive, Send], Awaitable[None]], scope: HTTPScope, receive: Receive, send: Send
    ) -> None:
        given = _header(scope, b"x-request-id")
        rid = given if given is not None and _GIVEN_ID.fullmatch(given) else new_request_id()
        reset = request_id.set(rid)
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.current_task()
        body_done = waiting = expired = timed_out = False
        status = 0

        def expire() -> None:
            """The body's deadline passed: a receive waiting for it is cancelled, a later one refused."""
            nonlocal expired
            expired = True
            if waiting and task is not None:
                task.cancel()

        deadline = loop.call_at(started + self.body_timeout_s, expire)

        async def receive_in_time() -> ReceiveMessage:
            nonlocal body_done, waiting, timed_out
            if body_done or status:  # after the body (or once answering) only a disconnect can come: no deadline
                return await receive()
            if not expired:
                waiting = True
                try:
                    message = await receive()
                except asyncio.CancelledError:
                    if not expired or task is None or task.uncancel() > 0:
                        raise  # cancelled for another reason (shutdown, a disconnect): not ours to turn into a 408
                else:
                    body_done = message["type"] != "http.request" or not message.get("more_body", False)
                    if body_done:
                        deadline.cancel()
                    return message
                finally:
                    waiting = False
            timed_out = True
            raise RequestTimeout(f"the request body did not arrive within {self.body_timeout_s:g} s (BODY_TIMEOUT_S)")

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                extra = [*self.headers, (b"x-request-id", rid.encode())]
                if timed_out:  # the rest of a trickled body is not waited for: the connection goes
                    extra.append((b"connection", b"close"))
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        try:
            await app(scope, receive_in_time, send_with_headers)
        finally:
            deadline.cancel()
            raw_query = bytes(scope.get("query_string", b""))
            answered = status or 500  # nothing was sent: the app raised, and the server answers 500
            access_log.info(
                "%s %s %s",
                scope["method"],
                scope["path"],
                answered,
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "query": redact_query(raw_query.decode("latin-1")) if raw_query else "",
                    "status": answered,
                    "duration_ms": round((loop.time() - started) * 1000, 1),
                },
            )
            request_id.reset(reset)


class GuardedLitestar(Litestar):
    """The Litestar app, with every HTTP request passed through a `RequestGuard` first."""

    guard: RequestGuard | None = None

    async def __call__(
        self, scope: Scope | LifeSpanScope, receive: Receive | LifeSpanReceive, send: Send | LifeSpanSend
    ) -> None:
        if scope["type"] != ScopeType.HTTP or self.guard is None:
            await super().__call__(scope, receive, send)
            return
        await self.guard(super().__call__, scope, receive, send)  # type: ignore[arg-type]


def guard_for(settings: Settings) -> RequestGuard:
    return RequestGuard(security_headers(settings), settings.body_timeout_s)
