"""What the request guard costs per request on the event loop, in a quiet process (no server, no sockets).

    .venv/bin/python bench/guard_cost.py [--requests 20000]

A minimal ASGI app reads a 64 KiB body and answers; it is called bare, then through `RequestGuard` with its
access line on and off (the line goes through the real JSON log handler to /dev/null). Printed: microseconds per
request for each. `bench/load.py` shows what this costs at max pace, where the loop shares the GIL with the audio
thread; this isolates the guard's own CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from typing import Any

from bridge.logs import install_json_logging
from bridge.request_guard import access_log, guard_for
from shared.settings import Settings

BODY = b"x" * 65536
SCOPE: dict[str, Any] = {
    "type": "http",
    "method": "POST",
    "path": "/functions/v1/process-audio",
    "query_string": b"",
    "headers": [(b"host", b"bridge"), (b"authorization", b"Bearer ibk_x"), (b"content-type", b"application/json")],
}


async def app(scope: Any, receive: Any, send: Any) -> None:
    while (await receive()).get("more_body"):
        pass
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": b"{}"})


async def receive() -> dict[str, Any]:
    return {"type": "http.request", "body": BODY, "more_body": False}


async def send(message: Any) -> None:
    return None


async def per_request_us(requests: int, guarded: bool) -> float:
    guard = guard_for(Settings())
    started = time.perf_counter()
    for _ in range(requests):
        if guarded:
            await guard(app, SCOPE, receive, send)  # type: ignore[arg-type]
        else:
            await app(SCOPE, receive, send)
    return (time.perf_counter() - started) / requests * 1e6


async def main(requests: int) -> None:
    for label, guarded, logged in (
        ("bare app", False, True),
        ("guarded", True, True),
        ("guarded, no access line", True, False),
    ):
        access_log.disabled = not logged
        best = min([await per_request_us(requests, guarded) for _ in range(3)])
        print(f"{label:26s} {best:6.1f} us per request (best of 3 x {requests})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    args = parser.parse_args()
    install_json_logging()
    handler = logging.getLogger().handlers[0]
    handler.stream = open(os.devnull, "w")  # type: ignore[attr-defined]  # noqa: SIM115
    asyncio.run(main(args.requests))
