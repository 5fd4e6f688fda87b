"""The Postgres store: asyncpg pool, schema from `supabase/migrations/`, atomic steps as SQL functions.

Works against any PostgreSQL 15+, Supabase's own database included, directly (port 5432) or through a
transaction-mode pooler (Supabase's on port 6543, PgBouncer): there a server connection changes between
transactions, so named prepared statements cannot be cached (`statement_cache_size=0`); that is switched on
by `pgbouncer=True`, by `?pgbouncer=true` in the DSN, or by the DSN's port being 6543.

Claiming and saving a speaker stream, inserting a chunk and inserting an entry each run as one SQL function
call (`claim_speaker_stream`, `save_speaker_stream`, `insert_audio_chunk`, `insert_transcript_entry`): one
round trip, one transaction, row locks and conditional updates inside, so two machines on one database never
store an entry twice or lose a done-marking.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from shared.errors import StoreConflict, StoreUnavailable
from shared.models import (
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
from shared.store.rows import (
    chunk_from_row,
    delivery_from_row,
    entry_from_row,
    session_from_row,
    stream_from_row,
    tenant_from_row,
)

POOLER_PORT = 6543
# pg_advisory_xact_lock key serialising migrations between processes that start together ("ib-migr")
_MIGRATION_LOCK = 0x69622D6D69677200
_TRUE = {"1", "true", "yes", "on"}


def migrations_dir() -> Path:
    """`supabase/migrations/` of this checkout: the same files a Supabase user applies with their own tools."""
    return Path(__file__).resolve().parents[2] / "supabase" / "migrations"


def postgres_migrations(folder: Path | None = None) -> list[tuple[str, str]]:
    """(name, sql) of every migration file, in name (timestamp) order."""
    folder = folder or migrations_dir()
    if not folder.is_dir():
        raise StoreUnavailable(f"the Postgres migrations folder {folder} is missing; ship supabase/migrations")
    files = sorted(path for path in folder.iterdir() if path.suffix == ".sql")
    return [(path.name, path.read_text(encoding="utf-8")) for path in files]


def parse_dsn(dsn: str, pgbouncer: bool | None) -> tuple[str, bool]:
    """The DSN to hand asyncpg (without our `pgbouncer` parameter) and whether a transaction pooler is in the way."""
    parts = urlsplit(dsn)
    query = parse_qsl(parts.query, keep_blank_values=True)
    flag = [value for key, value in query if key == "pgbouncer"]
    rest = [(key, value) for key, value in query if key != "pgbouncer"]
    if pgbouncer is None and flag:
        pgbouncer = flag[-1].strip().lower() in _TRUE
    if pgbouncer is None:
        ports: list[str] = [value for key, value in rest if key == "port"]
        try:
            if parts.port is not None:
                ports.append(str(parts.port))
        except ValueError:  # multi-host netloc: h1:5432,h2:6543
            ports += [host.rpartition(":")[2] for host in parts.netloc.rpartition("@")[2].split(",")]
        pgbouncer = str(POOLER_PORT) in ports
    cleaned = urlunsplit(parts._replace(query=urlencode(rest)))
    return cleaned, pgbouncer


async def _init_connection(conn: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await conn.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session_state(conn: asyncpg.Connection) -> None:
    """A released connection goes back to the pool as it is. asyncpg's default reset sends a query on every release
    (`RESET ALL`, `UNLISTEN *`, `CLOSE ALL`, advisory unlocks): a second round trip for each store call, halving
    calls per second. The store leaves no session state behind (no SET, LISTEN, cursors or session locks), and
    asyncpg still rolls back a transaction left open before this is called."""


class PostgresStore:
    """Store protocol on PostgreSQL through an asyncpg pool."""

    name = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        auto_migrate: bool = True,
        min_size: int = 1,
        max_size: int = 10,
        pgbouncer: bool | None = None,
        command_timeout: float | None = 30.0,
        migrations: Path | None = None,
    ) -> None:
        self.dsn, self.pgbouncer = parse_dsn(dsn, pgbouncer)
        self.auto_migrate = auto_migrate
        self.min_size = min_size
        self.max_size = max_size
        self.command_timeout = command_timeout
        self.migrations = migrations
        self._pool: asyncpg.Pool | None = None

    # lifecycle
    async def start(self) -> None:
        if self._pool is not None:
            return
        try:
            self._pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                statement_cache_size=0 if self.pgbouncer else 256,
                command_timeout=self.command_timeout,
                init=_init_connection,
                reset=_keep_session_state,
            )
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreUnavailable(f"cannot connect to Postgres ({_redact(self.dsn)}): {exc}") from exc
        if self.auto_migrate:
            await self.migrate()

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @asynccontextmanager
    async def _conn(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; driver and network errors come out as StoreUnavailable."""
        if self._pool is None:
            raise StoreUnavailable("the store is not open; call start() first")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except asyncpg.IntegrityConstraintViolationError as exc:
            raise StoreConflict(f"Postgres refused a conflicting write ({type(exc).__name__}): {exc}") from exc
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise StoreUnavailable(f"Postgres failed: {type(exc).__name__}: {exc}") from exc

    async def migrate(self) -> list[str]:
        applied: list[str] = []
        async with self._conn() as conn:
            for name, sql in postgres_migrations(self.migrations):
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations"
                        " (name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                    )
                    if await conn.fetchval("SELECT 1 FROM schema_migrations WHERE name = $1", name):
                        continue
                    await conn.execute(sql)
                    await conn.execute("INSERT INTO schema_migrations (name) VALUES ($1)", name)
                applied.append(name)
        return applied

    # tenants
    async def create_tenant(self, tenant: Tenant, api_key_hash: str) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO tenants (id, name, api_key_hash, created_at) VALUES ($1, $2, $3, $4)",
                tenant.id,
                tenant.name,
                api_key_hash,
                tenant.created_at,
            )

    async def tenant_by_key_hash(self, api_key_hash: str) -> Tenant | None:
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT id, name, created_at FROM tenants WHERE api_key_hash = $1", api_key_hash)
        return tenant_from_row(row) if row else None

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        async with self._conn() as conn:
            row = await conn.fetchrow("SELECT id, name, created_at FROM tenants WHERE id = $1", tenant_id)
        return tenant_from_row(row) if row else None

    async def tenants_named(self, name: str) -> list[Tenant]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT * FROM tenants WHERE name = $1 ORDER BY created_at, id", name)
        return [tenant_from_row(row) for row in rows]

    async def set_tenant_webhook(self, tenant_id: str, url: str | None, secret: str | None) -> bool:
        async with self._conn() as conn:
            status = await conn.execute(
                "UPDATE tenants SET webhook_url = $1, webhook_secret = coalesce($2, webhook_secret) WHERE id = $3",
                url,
                secret,
                tenant_id,
            )
        return bool(status != "UPDATE 0")

    async def claim_webhook_deliveries(
        self, due_by: datetime, lease_until: datetime, limit: int, *, session_id: str | None = None
    ) -> list[WebhookDelivery]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT * FROM claim_webhook_deliveries($1, $2, $3, $4)", due_by, lease_until, limit, session_id
            )
        return [delivery_from_row(row) for row in rows]

    async def finish_webhook_delivery(
        self, delivery_id: str, *, delivered: bool, at: datetime, next_attempt_at: datetime | None, error: str | None
    ) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "SELECT finish_webhook_delivery($1, $2, $3, $4, $5)", delivery_id, delivered, at, next_attempt_at, error
            )

    # sessions
    async def create_session(self, session: Session) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "INSERT INTO sessions (id, tenant_id, candidate_id, position_id, status, speakers, language,"
                " metadata, created_at, last_activity_at, ended_at, machine_id)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                session.id,
                session.tenant_id,
                session.candidate_id,
                session.position_id,
                session.status.value,
                list(session.speakers),
                session.language,
                session.metadata,
                session.created_at,
                session.last_activity_at,
                session.ended_at,
                session.machine_id,
            )

    async def get_session(self, session_id: str, tenant_id: str | None) -> Session | None:
        async with self._conn() as conn:
            if tenant_id is None:
                row = await conn.fetchrow("SELECT * FROM sessions WHERE id = $1", session_id)
            else:
                row = await conn.fetchrow(
                    "SELECT * FROM sessions WHERE id = $1 AND tenant_id = $2", session_id, tenant_id
                )
        return session_from_row(row) if row else None

    async def list_sessions(
        self,
        tenant_id: str,
        *,
        status: SessionStatus | None = None,
        candidate_id: str | None = None,
        limit: int = 50,
        before: tuple[datetime, str] | None = None,
    ) -> list[Session]:
        sql = "SELECT * FROM sessions WHERE tenant_id = $1"
        args: list[Any] = [tenant_id]
        if status is not None:
            args.append(status.value)
            sql += f" AND status = ${len(args)}"
        if candidate_id is not None:
            args.append(candidate_id)
            sql += f" AND candidate_id = ${len(args)}"
        if before is not None:
            args += [before[0], before[1]]
            sql += f" AND (created_at, id) < (${len(args) - 1}, ${len(args)})"
        args.append(limit)
        sql += f" ORDER BY created_at DESC, id DESC LIMIT ${len(args)}"
        async with self._conn() as conn:
            rows = await conn.fetch(sql, *args)
        return [session_from_row(row) for row in rows]

    async def set_session_status(
        self, session_id: str, status: SessionStatus, at: datetime, *, only_if_active: bool = True
    ) -> Session | None:
        ended_at = None if status is SessionStatus.ACTIVE else at
        condition = " AND status = 'active'" if only_if_active else ""
        async with self._conn() as conn, conn.transaction():
            row = await conn.fetchrow(
                "UPDATE sessions SET status = $1, ended_at = $2, last_activity_at = $3"
                f" WHERE id = $4{condition} RETURNING *",
                status.value,
                ended_at,
                at,
                session_id,
            )
            if row is None:
                row = await conn.fetchrow("SELECT * FROM sessions WHERE id = $1", session_id)
        return session_from_row(row) if row else None

    async def close_session(self, session_id: str, status: SessionStatus, at: datetime) -> Session | None:
        async with self._conn() as conn:
            closed = await conn.fetchval(
                "SELECT close_session($1, $2, $3, $4, $5)::text",
                session_id,
                status.value,
                at,
                str(uuid.uuid4()),
                at + timedelta(seconds=FIRST_DELIVERY_AFTER_S),
            )
        return None if closed is None else session_from_row(json.loads(closed))

    async def stale_sessions(self, idle_before: datetime, started_before: datetime, limit: int) -> list[Session]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT * FROM sessions WHERE status = 'active' AND (last_activity_at < $1 OR created_at < $2)"
                " ORDER BY last_activity_at, id LIMIT $3",
                idle_before,
                started_before,
                limit,
            )
        return [session_from_row(row) for row in rows]

    async def delete_session(self, tenant_id: str, session_id: str) -> bool:
        async with self._conn() as conn:
            status = await conn.execute("DELETE FROM sessions WHERE id = $1 AND tenant_id = $2", session_id, tenant_id)
        return bool(status != "DELETE 0")

    async def delete_closed_audio(self, closed_before: datetime, limit: int) -> int:
        async with self._conn() as conn:
            count = await conn.fetchval("SELECT delete_closed_audio($1, $2)", closed_before, limit)
        return int(count)

    async def delete_closed_sessions(self, closed_before: datetime, limit: int) -> int:
        async with self._conn() as conn:
            count = await conn.fetchval("SELECT delete_closed_sessions($1, $2)", closed_before, limit)
        return int(count)

    async def add_usage(
        self, tenant_id: str, day: date, *, audio_ms: int = 0, engine_ms: int = 0, engine_calls: int = 0
    ) -> None:
        async with self._conn() as conn:
            await conn.execute(
                "SELECT add_usage($1, $2, $3, $4, $5)", tenant_id, day, audio_ms, engine_ms, engine_calls
            )

    async def usage(self, tenant_id: str, first: date, last: date) -> list[UsageDay]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT * FROM tenant_usage($1, $2, $3)", tenant_id, first, last)
        return [
            UsageDay(r["day"], r["audio_ms"], r["engine_ms"], r["engine_calls"], r["sessions"], r["entries"])
            for r in rows
        ]

    async def claim_reaper_pass(self, owner: str, now: datetime, until: datetime) -> bool:
        async with self._conn() as conn:
            return bool(await conn.fetchval("SELECT claim_reaper_pass($1, $2, $3)", owner, now, until))

    async def release_reaper_pass(self, owner: str) -> None:
        async with self._conn() as conn:
            await conn.execute("SELECT release_reaper_pass($1)", owner)

    async def sessions_with_pending_audio(self) -> list[tuple[str, str]]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT session_id, speaker FROM sessions_with_pending_audio()")
        return [(row["session_id"], row["speaker"]) for row in rows]

    async def stuck_chunks(self, received_before: datetime, due_at: datetime, limit: int) -> list[StuckChunk]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT * FROM stuck_chunks($1, $2, $3)", received_before, due_at, limit)
        return [StuckChunk(r["session_id"], r["speaker"], r["sequence_number"], r["attempts"]) for r in rows]

    async def record_chunk_attempt(
        self, session_id: str, speaker: str, sequences: Sequence[int], next_attempt_at: datetime
    ) -> int:
        async with self._conn() as conn:
            count = await conn.fetchval(
                "SELECT record_chunk_attempt($1, $2, $3, $4)", session_id, speaker, list(sequences), next_attempt_at
            )
        return int(count)

    async def fail_chunks(self, session_id: str, speaker: str, sequences: Sequence[int], at: datetime) -> int:
        async with self._conn() as conn:
            count = await conn.fetchval("SELECT fail_chunks($1, $2, $3, $4)", session_id, speaker, list(sequences), at)
        return int(count)

    async def failed_sequences(self, session_id: str) -> dict[str, list[int]]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT speaker, sequence_number FROM failed_sequences($1)", session_id)
        failed: dict[str, list[int]] = {}
        for row in rows:
            failed.setdefault(row["speaker"], []).append(row["sequence_number"])
        return failed

    # audio chunks
    async def insert_chunk(self, chunk: NewChunk) -> InsertOutcome:
        async with self._conn() as conn:
            outcome = await conn.fetchval(
                "SELECT insert_audio_chunk($1, $2, $3, $4, $5, $6, $7, $8)",
                chunk.session_id,
                chunk.speaker,
                chunk.sequence_number,
                chunk.mime_type,
                chunk.data,
                chunk.digest,
                chunk.starts_stream,
                chunk.received_at,
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
        columns = "session_id, speaker, sequence_number, mime_type, starts_stream, received_at, state"
        if with_data:
            columns += ", bytes"
        sql = f"SELECT {columns} FROM audio_chunks WHERE session_id = $1 AND speaker = $2 AND sequence_number >= $3"
        if pending_only:
            sql += " AND state = 'pending'"
        sql += " ORDER BY sequence_number"
        async with self._conn() as conn:
            rows = await conn.fetch(sql, session_id, speaker, from_sequence)
        return [chunk_from_row(row, bytes(row["bytes"]) if with_data else None) for row in rows]

    async def get_chunk(self, session_id: str, speaker: str, sequence_number: int) -> StoredChunk | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM audio_chunks WHERE session_id = $1 AND speaker = $2 AND sequence_number = $3",
                session_id,
                speaker,
                sequence_number,
            )
        return chunk_from_row(row, bytes(row["bytes"])) if row else None

    async def next_sequences(self, session_id: str) -> dict[str, int]:
        async with self._conn() as conn:
            rows = await conn.fetch("SELECT speaker, next_sequence FROM next_sequences($1)", session_id)
        return {row["speaker"]: row["next_sequence"] for row in rows}

    # speaker streams
    async def claim_stream(
        self, session_id: str, speaker: str, owner: str, lease_seconds: float, now: datetime
    ) -> SpeakerStream | None:
        async with self._conn() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM claim_speaker_stream($1, $2, $3, $4, $5)",
                session_id,
                speaker,
                owner,
                float(lease_seconds),
                now,
            )
        return stream_from_row(row) if row else None

    async def save_stream(
        self,
        stream: SpeakerStream,
        owner: str,
        *,
        done_sequences: Sequence[int] = (),
        entry: NewEntry | None = None,
        usage: UsageCount | None = None,
    ) -> EntryWrite | None:
        counted = usage or UsageCount("", date.min)
        async with self._conn() as conn:
            result = await conn.fetchval(
                "SELECT save_speaker_stream($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                if usage is None
                else "SELECT save_speaker_stream_counted($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,"
                " $13, $14, $15, $16, $17)",
                stream.session_id,
                stream.speaker,
                owner,
                stream.version,
                stream.next_sequence,
                stream.buffer_sequence,
                stream.buffer_offset,
                stream.buffer_start_ms,
                stream.header_sequence,
                stream.gap_since,
                list(done_sequences),
                entry_json(entry) if entry is not None else None,
                *(
                    ()
                    if usage is None
                    else (counted.tenant_id, counted.day, counted.audio_ms, counted.engine_ms, counted.engine_calls)
                ),
            )
        if not result["saved"]:
            raise StreamLeaseLost(f"stream {stream.session_id}/{stream.speaker} was taken by another worker")
        stream.version += 1
        written = result.get("written")
        return entry_write_from_json(written) if written else None

    async def release_stream(self, session_id: str, speaker: str, owner: str) -> None:
        async with self._conn() as conn:
            await conn.execute("SELECT release_speaker_stream($1, $2, $3)", session_id, speaker, owner)

    # transcript entries
    async def insert_entry(self, entry: NewEntry) -> EntryWrite:
        async with self._conn() as conn:
            result = await conn.fetchval("SELECT insert_transcript_entry($1)", entry_json(entry))
        return entry_write_from_json(result)

    async def list_entries(self, session_id: str) -> list[TranscriptEntry]:
        async with self._conn() as conn:
            rows = await conn.fetch(
                "SELECT * FROM transcript_entries WHERE session_id = $1"
                " ORDER BY start_ms NULLS LAST, speaker, first_sequence",
                session_id,
            )
        return [entry_from_row(row) for row in rows]


# rows and JSON shared with the Supabase store (PostgREST answers with the same column names)


def entry_json(entry: NewEntry) -> dict[str, Any]:
    """A new entry as the `p_entry` argument of `insert_transcript_entry`/`save_speaker_stream`."""
    return {
        "tenant_id": entry.tenant_id,
        "session_id": entry.session_id,
        "speaker": entry.speaker,
        "first_sequence": entry.first_sequence,
        "last_sequence": entry.last_sequence,
        "text": entry.text,
        "start_ms": entry.start_ms,
        "end_ms": entry.end_ms,
        "language": entry.language,
        "confidence": entry.confidence,
        "engine": entry.engine,
    }


def entry_write_from_json(value: dict[str, Any]) -> EntryWrite:
    return EntryWrite(entry_from_row(value["entry"]), created=bool(value["created"]))


def _redact(dsn: str) -> str:
    parts = urlsplit(dsn)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return dsn
