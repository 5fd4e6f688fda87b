"""Small helpers the HTTP tests share: tenants, sessions, chunks as a browser sends them, row counts."""

from __future__ import annotations

import base64
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient

from bridge.offline import split_chunks, wav_bytes
from bridge.services import Services
from shared.audio.decode import decode_chunk
from shared.audio.formats import inspect_chunk
from shared.credentials import hash_api_key, new_api_key
from shared.errors import EngineUnavailable
from shared.models import Tenant, utcnow
from shared.stt.base import Pcm, Transcription
from shared.stt.simulate import SimulatedTranscriber

Client = AsyncTestClient[Litestar]
FIXTURES = Path(__file__).parent / "fixtures"


def services(client: Client) -> Services:
    found: Services = client.app.state.services
    return found


async def new_tenant(client: Client, name: str = "acme") -> tuple[str, str]:
    """(tenant_id, api_key) of a tenant created the way `tenant create` does."""
    api_key = new_api_key()
    tenant = Tenant(id=str(uuid.uuid4()), name=name, created_at=utcnow())
    await services(client).store.create_tenant(tenant, hash_api_key(api_key))
    return tenant.id, api_key


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def new_session(client: Client, api_key: str, **body: Any) -> tuple[str, str]:
    """(session_id, session token) of a new session."""
    response = await client.post("/sessions", json=body, headers=bearer(api_key))
    assert response.status_code == 201, response.text
    created = response.json()
    return created["session"]["id"], created["token"]


def load_pcm(path: Path) -> Pcm:
    data = path.read_bytes()
    return decode_chunk(data, inspect_chunk(data, None))


def wav_chunks(pcm: Pcm, seconds: float = 2.0) -> list[bytes]:
    return [wav_bytes(piece) for piece in split_chunks(pcm, seconds)]


def chunk_body(
    session_id: str, speaker: str, sequence: int, data: bytes, mime: str | None = "audio/wav"
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "session_id": session_id,
        "speaker": speaker,
        "sequence_number": sequence,
        "audio_chunk": base64.b64encode(data).decode("ascii"),
    }
    if mime is not None:
        body["mime_type"] = mime
    return body


async def post_chunk(
    client: Client,
    token: str,
    session_id: str,
    speaker: str,
    sequence: int,
    data: bytes,
    mime: str | None = "audio/wav",
    *,
    wait_ms: int | None = None,
) -> Any:
    body = chunk_body(session_id, speaker, sequence, data, mime)
    if wait_ms is not None:
        body["wait_ms"] = wait_ms
    return await client.post("/functions/v1/process-audio", json=body, headers=bearer(token))


def row_counts(client: Client) -> dict[str, int]:
    """Rows per table of the embedded store, to prove that a refused request changed nothing."""
    conn: sqlite3.Connection = services(client).store.conn  # type: ignore[attr-defined]
    tables = ["tenants", "sessions", "audio_chunks", "speaker_streams", "transcript_entries"]
    counts = {t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
    counts["ended"] = conn.execute("SELECT COUNT(*) FROM sessions WHERE status != 'active'").fetchone()[0]
    return counts


class EngineOutage(SimulatedTranscriber):
    """The simulated engine, down (503-like EngineUnavailable) for its first `failures` calls."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.calls = 0

    async def transcribe(self, pcm: Pcm, **options: Any) -> Transcription:
        self.calls += 1
        if self.calls <= self.failures:
            raise EngineUnavailable("the engine answered 503", retry_after=1)
        return await super().transcribe(pcm, **options)
