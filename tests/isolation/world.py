"""Two tenants on one bridge, every credential kind of each, and the means to prove that a request changed nothing.

`seed_world` builds tenant A and tenant B through the public HTTP routes (tenants themselves are made the way
`tenant create` does, in the store). `Dumper` takes a full dump of every table (SQLite or Postgres, through a
connection of its own for Postgres), so "nothing written" is checked row by row, not by counts alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import asyncpg
import httpx
import jwt
import numpy as np
import uvicorn
from litestar import Litestar

from bridge.services import Services
from shared.credentials import hash_api_key, new_api_key
from shared.models import Tenant, utcnow
from tests.helpers import FIXTURES, chunk_body, load_pcm, wav_chunks

USER_JWT_SECRET = "supabase-jwt-secret-for-isolation-tests-0123456789"
SERVICE_KEY = "service-key-for-tests-0123456789abcdef"
CREDENTIAL_KINDS = ("tenant_key", "session_token", "viewer_token", "user_jwt", "service_key")
SPEECH = FIXTURES / "live" / "two_sentences.flac"


@cache
def speech_chunks() -> tuple[bytes, ...]:
    """Real speech as standalone 2 s WAV chunks, the way a browser sending WAV would."""
    return tuple(wav_chunks(load_pcm(SPEECH), 2.0))


@cache
def silence_chunk(seconds: float = 2.0) -> bytes:
    """Digital silence as one standalone WAV chunk."""
    from shared.stt.wavio import wav_bytes

    return wav_bytes(np.zeros(int(16_000 * seconds), dtype=np.float32))


def user_jwt(tenant_id: str, *, secret: str = USER_JWT_SECRET, ttl_s: int = 3600) -> str:
    """A Supabase Auth user token of `tenant_id`, as the project would sign it (HS256, legacy JWT secret)."""
    now = int(time.time())
    claims = {
        "aud": "authenticated",
        "sub": str(uuid.uuid4()),
        "role": "authenticated",
        "iat": now,
        "exp": now + ttl_s,
        "email": f"user-{tenant_id[:8]}@example.test",
        "app_metadata": {"provider": "email", "tenant_id": tenant_id},
        "user_metadata": {},
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@dataclass
class Tenantry:
    """One tenant, its sessions and every credential kind that can speak for it."""

    name: str
    tenant_id: str
    api_key: str
    session_id: str  # active, with entries, processed audio and a chunk held behind a gap
    ended_session_id: str  # ended, with an entry
    session_token: str
    viewer_token: str
    user_token: str
    ended_session_token: str
    secrets: set[str] = field(default_factory=set)  # strings only this tenant's data contains

    def credential(self, kind: str) -> str:
        return {
            "tenant_key": self.api_key,
            "session_token": self.session_token,
            "viewer_token": self.viewer_token,
            "user_jwt": self.user_token,
            "service_key": SERVICE_KEY,
        }[kind]


async def _tenant(services: Services, name: str) -> tuple[str, str]:
    api_key = new_api_key()
    tenant = Tenant(id=str(uuid.uuid4()), name=name, created_at=utcnow())
    await services.store.create_tenant(tenant, hash_api_key(api_key))
    return tenant.id, api_key


async def _ok(response: httpx.Response, *codes: int) -> dict[str, Any]:
    assert response.status_code in codes, f"{response.request.method} {response.request.url}: {response.text}"
    return response.json() if response.content else {}


async def seed_tenant(http: httpx.AsyncClient, services: Services, name: str) -> Tenantry:
    """A tenant with an active session (entries, speech processed, audio pending behind a gap) and an ended one."""
    marker = f"{name}-{uuid.uuid4().hex[:10]}"
    tenant_id, api_key = await _tenant(services, f"tenant-{marker}")
    created = await _ok(
        await http.post(
            "/sessions",
            json={
                "candidate_id": f"cand-{marker}",
                "position_id": f"pos-{marker}",
                "speakers": ["interviewer", "candidate", "held"],
                "metadata": {"note": f"meta-{marker}"},
            },
            headers=bearer(api_key),
        ),
        201,
    )
    session_id, token = created["session"]["id"], created["token"]
    viewer = (await _ok(await http.post(f"/sessions/{session_id}/viewer-token", headers=bearer(token)), 201))["token"]
    secrets = {tenant_id, api_key, session_id, token, viewer, f"cand-{marker}", f"pos-{marker}", f"meta-{marker}"}
    for seq, words in enumerate(["opening question", "a follow-up"]):
        text = f"secret-{marker}-{seq} {words}"
        stored = await _ok(
            await http.post(
                "/functions/v1/transcript-bridge",
                json={"session_id": session_id, "speaker": "interviewer", "sequence_number": seq, "text": text},
                headers=bearer(token),
            ),
            200,
        )
        secrets |= {text, stored["entry"]["id"]}
    # real speech, then silence: the utterance ends and becomes an entry; then a chunk held behind a gap
    for seq, data in enumerate([*speech_chunks()[:2], silence_chunk(), silence_chunk()]):
        await _ok(
            await http.post(
                "/process-audio",
                json=chunk_body(session_id, "candidate", seq, data) | {"wait_ms": 5000},
                headers=bearer(token),
            ),
            200,
        )
    await _ok(
        await http.post(
            "/process-audio",
            json=chunk_body(session_id, "held", 1, speech_chunks()[0]) | {"wait_ms": 5000},
            headers=bearer(token),
        ),
        200,
    )
    transcript = await _ok(await http.get(f"/sessions/{session_id}/transcript", headers=bearer(token)), 200)
    secrets |= {entry["id"] for entry in transcript["entries"]}
    assert any(e["speaker"] == "candidate" for e in transcript["entries"]), transcript

    ended = await _ok(
        await http.post("/sessions", json={"candidate_id": f"cand2-{marker}"}, headers=bearer(api_key)), 201
    )
    ended_id, ended_token = ended["session"]["id"], ended["token"]
    text = f"secret-{marker}-ended closing remarks"
    stored = await _ok(
        await http.post(
            "/transcript-bridge",
            json={"session_id": ended_id, "speaker": "interviewer", "sequence_number": 0, "text": text},
            headers=bearer(ended_token),
        ),
        200,
    )
    await _ok(await http.post(f"/sessions/{ended_id}/end", headers=bearer(ended_token)), 200)
    secrets |= {ended_id, ended_token, f"cand2-{marker}", text, stored["entry"]["id"]}
    return Tenantry(
        name=name,
        tenant_id=tenant_id,
        api_key=api_key,
        session_id=session_id,
        ended_session_id=ended_id,
        session_token=token,
        viewer_token=viewer,
        user_token=user_jwt(tenant_id),
        ended_session_token=ended_token,
        secrets=secrets,
    )


class Dumper:
    """Every row of every table, so a refused request can be shown to have written nothing at all."""

    def __init__(self, services: Services, pg_dsn: str | None) -> None:
        self.services = services
        self.pg_dsn = pg_dsn
        self._pg: asyncpg.Connection | None = None

    async def open(self) -> None:
        if self.pg_dsn is not None:
            self._pg = await asyncpg.connect(self.pg_dsn)

    async def close(self) -> None:
        if self._pg is not None:
            await self._pg.close()

    async def dump(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every table but the usage counters: a timer adds the tenant's own earlier use to them at any moment
        (work a request would count there also writes chunks or entries, which are compared)."""
        dumped = await self._dump_all()
        dumped.pop("usage_days", None)
        return dumped

    async def _dump_all(self) -> dict[str, list[tuple[Any, ...]]]:
        if self._pg is not None:
            tables = await self._pg.fetch(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' ORDER BY 1"
            )
            out = {}
            for row in tables:
                name = row["table_name"]
                rows = await self._pg.fetch(f'SELECT * FROM "{name}"')
                out[name] = sorted((tuple(r.values()) for r in rows), key=repr)
            return out
        conn: sqlite3.Connection = self.services.store.conn  # type: ignore[attr-defined]
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY 1")]
        return {name: sorted((tuple(r) for r in conn.execute(f'SELECT * FROM "{name}"')), key=repr) for name in names}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def in_process(app: Litestar) -> AsyncIterator[httpx.AsyncClient]:
    """`app` running in this event loop (its lifespan included), reached through an in-process ASGI transport.

    Litestar's AsyncTestClient runs the lifespan in a thread of its own, where an asyncpg pool would be bound to
    another loop than the requests and the test; this keeps app, store and test on one loop.
    """
    async with app.lifespan():
        transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]  # Litestar is an ASGI app
        async with httpx.AsyncClient(transport=transport, base_url="http://bridge.test", timeout=30) as client:
            client.app = app  # type: ignore[attr-defined]  # like AsyncTestClient, for `client.app.state.services`
            yield client


@contextlib.asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[int]:
    """Serve `app` with a real uvicorn on a free loopback port, in this event loop (lifespan included)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", ws="websockets-sansio")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(1000):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
        assert server.started, "uvicorn did not start"
        yield port
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 15)
        sock.close()


async def seed_api_key(services: Services, name: str = "acme") -> str:
    """A new tenant's API key, made the way `tenant create` makes it."""
    _, api_key = await _tenant(services, name)
    return api_key
