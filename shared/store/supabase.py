"""The Supabase store: the same Protocol over Supabase's REST API (PostgREST) through supabase-py's async client.

No database password needed: `SUPABASE_URL` and the service-role key. The schema comes from
`supabase/migrations/` applied with the Supabase CLI (`supabase db push`) or `interview-bridge db migrate` over
`DATABASE_URL`; REST cannot run DDL, so `migrate()` applies nothing here. The atomic steps (claim and save a
speaker stream, insert a chunk or an entry once) are the SQL functions of those migrations, called through
`rpc()`: one HTTP request, one transaction. Plain reads and writes use the table endpoints.

Every request costs an HTTP round trip: prefer the Postgres store (`DATABASE_URL`, the pooler on 6543) when
the bridge can reach the database; this one is for hosts that only get the project URL and key.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

import httpx
from postgrest.exceptions import APIError
from postgrest.types import ReturnMethod

from shared.errors import StoreConflict, StoreUnavailable
from shared.models import (
    ChunkState,
    EntryWrite,
    InsertOutcome,
    NewChunk,
    NewEntry,
    Session,
    SessionStatus,
    SpeakerStream,
    StoredChunk,
    StuckChunk,
    Tenant,
    TranscriptEntry,
    UsageCount,
    UsageDay,
    WebhookDelivery,
)
from shared.store.base import FIRST_DELIVERY_AFTER_S, StreamLeaseLost
from shared.store.postgres import entry_json, entry_write_from_json
from shared.store.rows import (
    chunk_from_row,
    delivery_from_row,
    entry_from_row,
    session_from_row,
    stream_from_row,
    tenant_from_row,
)
from supabase import AsyncClient, AsyncClientOptions, acreate_client

PAGE = 1000  # Supabase's default `max-rows`: longer reads are fetched page by page
_CHUNK_COLUMNS = "session_id,speaker,sequence_number,mime_type,starts_stream,received_at,state"


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _ts_opt(value: datetime | None) -> str | None:
    return None if value is None else _ts(value)


def _bytea(value: str | None) -> bytes | None:
    """PostgREST renders bytea as `\\x` followed by hex."""
    if value is None:
        return None
    if value.startswith("\\x"):
        return bytes.fromhex(value[2:])
    raise StoreUnavailable("Supabase returned audio bytes in an unexpected encoding (expected bytea hex)")


class SupabaseStore:
    """Store protocol over Supabase's PostgREST with the service-role key."""

    name = "supabase"

    def __init__(
        self,
        url: str,
        service_role_key: str,
        *,
        auto_migrate: bool = True,
        http_client: httpx.AsyncClient | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.url = url
        self.auto_migrate = auto_migrate  # nothing to apply over REST; kept for the factory's signature
        self._key = service_role_key
        self._http = http_client
        self._owns_http = http_client is None
        self._timeout = timeout
        self._client: AsyncClient | None = None

    # lifecycle
    async def start(self) -> None:
        if self._client is not None:
            return
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
        options = AsyncClientOptions(
            httpx_client=self._http,
            postgrest_client_retry=False,  # the caller decides about retries; no sleeping inside a chunk request
            auto_refresh_token=False,
            persist_session=False,
            headers={"Authorization": f"Bearer {self._key}"},
        )
        try:
            self._client = await acreate_client(self.url, self._key, options=options)
        except Exception as exc:  # supabase-py raises its own SupabaseException for a malformed URL or key
            raise StoreUnavailable(f"cannot create the Supabase client for {self.url}: {exc}") from exc

    async def close(self) -> None:
        self._client = None
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def migrate(self) -> list[str]:
        """Nothing to apply over REST: run `supabase db push` or `interview-bridge db migrate` with DATABASE_URL."""
        return []

    @property
    def client(self) -> AsyncClient:
        if self._client is None:
            raise StoreUnavailable("the store is not open; call start() first")
        return self._client

    async def _run(self, what: str, query: Any) -> Any:
        """Execute a postgrest-py query; PostgREST and network errors become StoreUnavailable."""
        try:
            response = await query.execute()
        except APIError as exc:
            raise _api_error(what, exc) from exc
        except httpx.HTTPError as exc:
            raise StoreUnavailable(
                f"Supabase is unreachable ({what}): {type(exc).__name__}: {exc}", retry_after=2
            ) from exc
        return response.data

    async def _rpc(self, function: str, params: dict[str, Any]) -> Any:
        return await self._run(f"rpc {function}", self.client.rpc(function, params))

    async def _rows(self, what: str, query: Any) -> list[dict[str, Any]]:
        data = await self._run(what, query)
        if not isinstance(data, list):
            raise StoreUnavailable(f"Supabase answered {what} with {type(data).__name__}, not a list of rows")
        return data

    # tenants
    async def create_tenant(self, tenant: Tenant, api_key_hash: str) -> None:
        row = {"id": tenant.id, "name": tenant.name, "api_key_hash": api_key_hash, "created_at": _ts(tenant.created_at)}
        await self._run("create tenant", self.client.table("tenants").insert(row, returning=ReturnMethod.minimal))

    async def tenant_by_key_hash(self, api_key_hash: str) -> Tenant | None:
        query = self.client.table("tenants").select("id,name,created_at").eq("api_key_hash", api_key_hash)
        rows = await self._rows("find tenant", query)
        return tenant_from_row(rows[0]) if rows else None

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        rows = await self._rows(
            "get tenant", self.client.table("tenants").select("id,name,created_at").eq("id", tenant_id)
        )
        return tenant_from_row(rows[0]) if rows else None

    async def tenants_named(self, name: str) -> list[Tenant]:
        query = self.client.table("tenants").select("*").eq("name", name).order("created_at").order("id")
        return [tenant_from_row(row) for row in await self._rows("find tenants", query)]

    async def set_tenant_webhook(self, tenant_id: str, url: str | None, secret: str | None) -> bool:
        changes: dict[str, Any] = {"webhook_url": url}
        if secret is not None:
            changes["webhook_secret"] = secret
        query = self.client.table("tenants").update(changes, returning=ReturnMethod.representation).eq("id", tenant_id)
        return bool(await self._rows("set tenant webhook", query))

    async def claim_webhook_deliveries(
        self, due_by: datetime, lease_until: datetime, limit: int, *, session_id: str | None = None
    ) -> list[WebhookDelivery]:
        rows = await self._rpc(
            "claim_webhook_deliveries",
            {
                "p_due_by": _ts(due_by),
                "p_lease_until": _ts(lease_until),
                "p_max_rows": limit,
                "p_session_id": session_id,
            },
        )
        return [delivery_from_row(row) for row in rows or []]

    async def finish_webhook_delivery(
        self, delivery_id: str, *, delivered: bool, at: datetime, next_attempt_at: datetime | None, error: str | None
    ) -> None:
        await self._rpc(
            "finish_webhook_delivery",
            {
                "p_id": delivery_id,
                "p_delivered": delivered,
                "p_at": _ts(at),
                "p_next_attempt_at": _ts_opt(next_attempt_at),
                "p_error": error,
            },
        )

    # sessions
    async def create_session(self, session: Session) -> None:
        row = {
            "id": session.id,
            "tenant_id": session.tenant_id,
            "candidate_id": session.candidate_id,
            "position_id": session.position_id,
            "status": session.status.value,
            "speakers": list(session.speakers),
            "language": session.language,
            "metadata": session.metadata,
            "created_at": _ts(session.created_at),
            "last_activity_at": _ts(session.last_activity_at),
            "ended_at": _ts_opt(session.ended_at),
            "machine_id": session.machine_id,
        }
        await self._run("create session", self.client.table("sessions").insert(row, returning=ReturnMethod.minimal))

    async def get_session(self, session_id: str, tenant_id: str | None) -> Session | None:
        query = self.client.table("sessions").select("*").eq("id", session_id)
        if tenant_id is not None:
            query = query.eq("tenant_id", tenant_id)
        rows = await self._rows("get session", query)
        return session_from_row(rows[0]) if rows else None

    async def list_sessions(
        self,
        tenant_id: str,
        *,
        status: SessionStatus | None = None,
        candidate_id: str | None = None,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        query = self.client.table("sessions").select("*").eq("tenant_id", tenant_id)
        if status is not None:
            query = query.eq("status", status.value)
        if candidate_id is not None:
            query = query.eq("candidate_id", candidate_id)
        if before is not None:
            at, last_id = _ts(before[0]), before[1].replace('"', "")
            query = query.or_(f'created_at.lt."{at}",and(created_at.eq."{at}",id.lt."{last_id}")')
        query = query.order("created_at", desc=True).order("id", desc=True).limit(limit)
        return [session_from_row(row) for row in await self._rows("list sessions", query)]

    async def set_session_status(
        self, session_id: str, status: SessionStatus, at: datetime, *, only_if_active: bool = True
    ) -> Session | None:
        changes = {
            "status": status.value,
            "ended_at": None if status is SessionStatus.ACTIVE else _ts(at),
            "last_activity_at": _ts(at),
        }
        query = (
            self.client.table("sessions").update(changes, returning=ReturnMethod.representation).eq("id", session_id)
        )
        if only_if_active:
            query = query.eq("status", SessionStatus.ACTIVE.value)
        rows = await self._rows("update session", query)
        if rows:
            return session_from_row(rows[0])
        return await self.get_session(session_id, None)

    async def close_session(self, session_id: str, status: SessionStatus, at: datetime) -> Session | None:
        row = await self._rpc(
            "close_session",
            {
                "p_session_id": session_id,
                "p_status": status.value,
                "p_at": _ts(at),
                "p_delivery_id": str(uuid.uuid4()),
                "p_deliver_after": _ts(at + timedelta(seconds=FIRST_DELIVERY_AFTER_S)),
            },
        )
        return session_from_row(row) if row else None

    async def stale_sessions(self, idle_before: datetime, started_before: datetime, limit: int) -> list[Session]:
        query = (
            self.client.table("sessions")
            .select("*")
            .eq("status", SessionStatus.ACTIVE.value)
            .or_(f'last_activity_at.lt."{_ts(idle_before)}",created_at.lt."{_ts(started_before)}"')
            .order("last_activity_at")
            .order("id")
            .limit(limit)
        )
        return [session_from_row(row) for row in await self._rows("list stale sessions", query)]

    async def delete_session(self, tenant_id: str, session_id: str) -> bool:
        query = (
            self.client.table("sessions")
            .delete(returning=ReturnMethod.representation)
            .eq("id", session_id)
            .eq("tenant_id", tenant_id)
        )
        return bool(await self._rows("delete session", query))

    async def delete_closed_audio(self, closed_before: datetime, limit: int) -> int:
        count = await self._rpc("delete_closed_audio", {"p_closed_before": _ts(closed_before), "p_max_sessions": limit})
        return int(count)

    async def delete_closed_sessions(self, closed_before: datetime, limit: int) -> int:
        count = await self._rpc(
            "delete_closed_sessions", {"p_closed_before": _ts(closed_before), "p_max_sessions": limit}
        )
        return int(count)

    async def add_usage(
        self, tenant_id: str, day: date, *, audio_ms: int = 0, engine_ms: int = 0, engine_calls: int = 0
    ) -> None:
        await self._rpc(
            "add_usage",
            {
                "p_tenant_id": tenant_id,
                "p_day": day.isoformat(),
                "p_audio_ms": audio_ms,
                "p_engine_ms": engine_ms,
                "p_engine_calls": engine_calls,
            },
        )

    async def usage(self, tenant_id: str, first: date, last: date) -> list[UsageDay]:
        rows = await self._rpc(
            "tenant_usage", {"p_tenant_id": tenant_id, "p_first": first.isoformat(), "p_last": last.isoformat()}
        )
        return [
            UsageDay(
                date.fromisoformat(r["day"]),
                r["audio_ms"],
                r["engine_ms"],
                r["engine_calls"],
                r["sessions"],
                r["entries"],
            )
            for r in rows or []
        ]

    async def claim_reaper_pass(self, owner: str, now: datetime, until: datetime) -> bool:
        taken = await self._rpc("claim_reaper_pass", {"p_owner": owner, "p_now": _ts(now), "p_until": _ts(until)})
        return bool(taken)

    async def release_reaper_pass(self, owner: str) -> None:
        await self._rpc("release_reaper_pass", {"p_owner": owner})

    async def sessions_with_pending_audio(self) -> list[tuple[str, str]]:
        rows = await self._rpc("sessions_with_pending_audio", {})
        return [(row["session_id"], row["speaker"]) for row in rows or []]

    async def stuck_chunks(self, received_before: datetime, due_at: datetime, limit: int) -> list[StuckChunk]:
        rows = await self._rpc(
            "stuck_chunks",
            {"p_received_before": _ts(received_before), "p_due_at": _ts(due_at), "p_max_rows": limit},
        )
        return [StuckChunk(r["session_id"], r["speaker"], r["sequence_number"], r["attempts"]) for r in rows or []]

    async def record_chunk_attempt(
        self, session_id: str, speaker: str, sequences: Sequence[int], next_attempt_at: datetime
    ) -> int:
        count = await self._rpc(
            "record_chunk_attempt",
            {
                "p_session_id": session_id,
                "p_speaker": speaker,
                "p_sequences": list(sequences),
                "p_next_attempt_at": _ts(next_attempt_at),
            },
        )
        return int(count)

    async def fail_chunks(self, session_id: str, speaker: str, sequences: Sequence[int], at: datetime) -> int:
        count = await self._rpc(
            "fail_chunks",
            {"p_session_id": session_id, "p_speaker": speaker, "p_sequences": list(sequences), "p_at": _ts(at)},
        )
        return int(count)

    async def failed_sequences(self, session_id: str) -> dict[str, list[int]]:
        failed: dict[str, list[int]] = {}
        for row in await self._rpc("failed_sequences", {"p_session_id": session_id}) or []:
            failed.setdefault(row["speaker"], []).append(row["sequence_number"])
        return failed

    # audio chunks
    async def insert_chunk(self, chunk: NewChunk) -> InsertOutcome:
        outcome = await self._rpc(
            "insert_audio_chunk",
            {
                "p_session_id": chunk.session_id,
                "p_speaker": chunk.speaker,
                "p_sequence_number": chunk.sequence_number,
                "p_mime_type": chunk.mime_type,
                "p_bytes": "\\x" + chunk.data.hex(),
                "p_digest": chunk.digest,
                "p_starts_stream": chunk.starts_stream,
                "p_received_at": _ts(chunk.received_at),
            },
        )
        return InsertOutcome(outcome)

    async def list_chunks(
        self,
        session_id: str,
        speaker: str,
        *,
        from_sequence: int = 0,
        pending_only: bool = False,
        with_data: bool = False,
    ) -> list[StoredChunk]:
        columns = _CHUNK_COLUMNS + (",bytes" if with_data else "")
        chunks: list[StoredChunk] = []
        next_from = from_sequence
        while True:  # keyset pages on sequence_number, so max-rows never truncates a long session
            query = (
                self.client.table("audio_chunks")
                .select(columns)
                .eq("session_id", session_id)
                .eq("speaker", speaker)
                .gte("sequence_number", next_from)
            )
            if pending_only:
                query = query.eq("state", ChunkState.PENDING.value)
            rows = await self._rows("list chunks", query.order("sequence_number").limit(PAGE))
            chunks += [chunk_from_row(row, _bytea(row.get("bytes")) if with_data else None) for row in rows]
            if len(rows) < PAGE:
                return chunks
            next_from = chunks[-1].sequence_number + 1

    async def get_chunk(self, session_id: str, speaker: str, sequence_number: int) -> StoredChunk | None:
        query = (
            self.client.table("audio_chunks")
            .select(_CHUNK_COLUMNS + ",bytes")
            .eq("session_id", session_id)
            .eq("speaker", speaker)
            .eq("sequence_number", sequence_number)
        )
        rows = await self._rows("get chunk", query)
        return chunk_from_row(rows[0], _bytea(rows[0].get("bytes"))) if rows else None

    async def next_sequences(self, session_id: str) -> dict[str, int]:
        rows = await self._rpc("next_sequences", {"p_session_id": session_id})
        return {row["speaker"]: row["next_sequence"] for row in rows or []}

    # speaker streams
    async def claim_stream(
        self, session_id: str, speaker: str, owner: str, lease_seconds: float, now: datetime
    ) -> SpeakerStream | None:
        rows = await self._rpc(
            "claim_speaker_stream",
            {
                "p_session_id": session_id,
                "p_speaker": speaker,
                "p_owner": owner,
                "p_lease_seconds": float(lease_seconds),
                "p_now": _ts(now),
            },
        )
        return stream_from_row(rows[0]) if rows else None

    async def save_stream(
        self,
        stream: SpeakerStream,
        owner: str,
        *,
        done_sequences: Sequence[int] = (),
        entry: NewEntry | None = None,
        usage: UsageCount | None = None,
    ) -> EntryWrite | None:
        params: dict[str, Any] = {}
        if usage is not None:
            params = {
                "p_tenant_id": usage.tenant_id,
                "p_usage_day": usage.day.isoformat(),
                "p_audio_ms": usage.audio_ms,
                "p_engine_ms": usage.engine_ms,
                "p_engine_calls": usage.engine_calls,
            }
        result = await self._rpc(
            "save_speaker_stream" if usage is None else "save_speaker_stream_counted",
            {
                **params,
                "p_session_id": stream.session_id,
                "p_speaker": stream.speaker,
                "p_owner": owner,
                "p_version": stream.version,
                "p_next_sequence": stream.next_sequence,
                "p_buffer_sequence": stream.buffer_sequence,
                "p_buffer_offset": stream.buffer_offset,
                "p_buffer_start_ms": stream.buffer_start_ms,
                "p_header_sequence": stream.header_sequence,
                "p_gap_since": _ts_opt(stream.gap_since),
                "p_done_sequences": list(done_sequences),
                "p_entry": entry_json(entry) if entry is not None else None,
            },
        )
        if not isinstance(result, dict) or "saved" not in result:
            raise StoreUnavailable(f"Supabase answered save_speaker_stream with {result!r}")
        if not result["saved"]:
            raise StreamLeaseLost(f"stream {stream.session_id}/{stream.speaker} was taken by another worker")
        stream.version += 1
        written = result.get("written")
        return entry_write_from_json(written) if written else None

    async def release_stream(self, session_id: str, speaker: str, owner: str) -> None:
        await self._rpc("release_speaker_stream", {"p_session_id": session_id, "p_speaker": speaker, "p_owner": owner})

    # transcript entries
    async def insert_entry(self, entry: NewEntry) -> EntryWrite:
        result = await self._rpc("insert_transcript_entry", {"p_entry": entry_json(entry)})
        return entry_write_from_json(result)

    async def list_entries(self, session_id: str) -> list[TranscriptEntry]:
        entries: list[TranscriptEntry] = []
        while True:
            query = (
                self.client.table("transcript_entries")
                .select("*")
                .eq("session_id", session_id)
                .order("start_ms", nullsfirst=False)
                .order("speaker")
                .order("first_sequence")
                .range(len(entries), len(entries) + PAGE - 1)
            )
            rows = await self._rows("list entries", query)
            entries += [entry_from_row(row) for row in rows]
            if len(rows) < PAGE:
                return entries


def _api_error(what: str, exc: APIError) -> StoreUnavailable | StoreConflict:
    """PostgREST's error body ({code, message, details, hint}) as our error, with what to do about it."""
    code = str(exc.code or "")
    message = exc.message or ""
    if code.startswith("PGRST3") or code in {"401", "403", "42501"}:
        return StoreUnavailable(
            f"Supabase refused the bridge's key for {what} ({code}: {message}); SUPABASE_SERVICE_ROLE_KEY must be"
            " the project's service_role key"
        )
    if code in {"PGRST202", "PGRST205", "42883", "42P01", "404"}:
        return StoreUnavailable(
            f"the Supabase schema lacks what {what} needs ({code}: {message}); apply supabase/migrations"
            " (supabase db push, or interview-bridge db migrate with DATABASE_URL)"
        )
    if code in {"23505", "23503", "23514", "409"}:
        return StoreConflict(f"Supabase rejected {what} as conflicting with stored data ({code}: {message})")
    return StoreUnavailable(f"Supabase failed {what} ({code}: {message})", retry_after=2)
