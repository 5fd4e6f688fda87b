"""A real uvicorn server (in a thread, on a free 127.0.0.1 port) serving the realtime routes over a LocalHub."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from litestar import Litestar, Request, get
from litestar.params import FromPath

from bridge.realtime import RESERVED_EVENTS, realtime_handlers
from shared.broadcast.local import LocalHub
from shared.errors import Forbidden, NotFound, Unauthorized

REPO = Path(__file__).resolve().parents[2]
JS_DIR = Path(__file__).resolve().parent / "js"

TOKENS: dict[str, set[str]] = {
    "tok-a": {"session:a"},
    "tok-b": {"session:b"},
    "tok-tenant": {"session:a", "session:b", "session:late"},
    "tok-late": {"session:late"},
}


class FakeAuthorizer:
    """Token -> topics it may join; any known token is a valid socket key; reserved events are never sendable."""

    def __init__(self, tokens: dict[str, set[str]] | None = None) -> None:
        self.tokens = tokens if tokens is not None else TOKENS

    async def check_socket(self, apikey: str | None) -> None:
        if apikey is None or apikey not in self.tokens:
            raise Unauthorized("unknown key")

    async def check_join(self, token: str | None, topic: str) -> None:
        if token is None or token not in self.tokens:
            raise Unauthorized("invalid or expired token")
        allowed = self.tokens[token]
        if "*" not in allowed and topic not in allowed:
            raise Forbidden(f"token not valid for {topic}")

    async def check_send(self, token: str | None, topic: str, event: str) -> None:
        await self.check_join(token, topic)
        if event in RESERVED_EVENTS:
            raise Forbidden(f"{event} is sent by the bridge only")


@dataclass
class Server:
    hub: LocalHub
    port: int
    transcripts: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def realtime_url(self) -> str:
        return f"{self.base_url}/realtime/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/realtime/v1/websocket"


def build_app(hub: LocalHub, transcripts: dict[str, list[dict[str, Any]]], **kwargs: Any) -> Litestar:
    @get("/sessions/{session_id:str}/transcript")
    async def transcript(request: Request[Any, Any, Any], session_id: FromPath[str]) -> dict[str, Any]:
        """A stand-in for the bridge's transcript route, enough for the late-joiner recipe."""
        if session_id not in transcripts:
            raise NotFound("no such session")
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if f"session:{session_id}" not in TOKENS.get(token, set()):
            raise Unauthorized("bad token")
        return {"session": {"id": session_id}, "entries": transcripts[session_id]}

    return Litestar(
        route_handlers=[transcript, *realtime_handlers(hub, FakeAuthorizer(), **kwargs)],
        on_startup=[hub.start],
        on_shutdown=[hub.close],
    )


@contextlib.contextmanager
def serve_in_thread(app: Litestar) -> Iterator[int]:
    """A real uvicorn server for `app` in a thread, on a free 127.0.0.1 port (yielded), served the way
    `interview-bridge serve` does: sans-I/O WebSockets without per-message deflate."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", lifespan="on", ws="websockets-sansio", ws_per_message_deflate=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    for _ in range(1000):
        if server.started:
            break
        threading.Event().wait(0.01)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@contextlib.contextmanager
def run_server(**kwargs: Any) -> Iterator[Server]:
    hub = LocalHub()
    transcripts: dict[str, list[dict[str, Any]]] = {}
    with serve_in_thread(build_app(hub, transcripts, **kwargs)) as port:
        yield Server(hub, port, transcripts)


@pytest.fixture(scope="session")
def server() -> Iterator[Server]:
    with run_server() as srv:
        yield srv


@pytest.fixture(scope="session")
def fast_idle_server() -> Iterator[Server]:
    with run_server(idle_timeout_s=1.0) as srv:
        yield srv


@pytest.fixture(scope="session")
def small_queue_server() -> Iterator[Server]:
    with run_server(max_queue=64) as srv:
        yield srv


@pytest.fixture(scope="session")
def node() -> str:
    """Node and the npm modules must be installed (the test script does it): a missing one FAILS the test."""
    path = shutil.which("node")
    assert path, "node is not installed: the test script installs Node 20"
    for module in ("@supabase/supabase-js", "ws"):
        assert (REPO / "node_modules" / module / "package.json").exists(), f"npm module {module} missing: run npm ci"
    return path


class NodeClient:
    """A supabase-js script under Node, speaking JSON lines on stdout."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[dict[str, Any]] = []

    async def next(self, within_s: float = 10.0) -> dict[str, Any]:
        import json

        assert self.proc.stdout is not None
        async with asyncio.timeout(within_s):
            raw = await self.proc.stdout.readline()
        if not raw:
            assert self.proc.stderr is not None
            err = await self.proc.stderr.read()
            raise AssertionError(f"node client ended: {err.decode()[-2000:]}")
        line: dict[str, Any] = json.loads(raw)
        self.lines.append(line)
        return line

    async def until(self, key: str, value: Any, within_s: float = 10.0) -> dict[str, Any]:
        async with asyncio.timeout(within_s):
            while True:
                line = await self.next(within_s)
                if line.get(key) == value:
                    return line

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
        await self.proc.wait()


@pytest.fixture
async def start_node(node: str) -> AsyncIterator[Any]:
    clients: list[NodeClient] = []

    async def start(script: str, *args: str) -> NodeClient:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(JS_DIR / script),
            *args,
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        client = NodeClient(proc)
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()
