"""The embedded store: one SQLite file in the data dir, WAL mode, schema migrated on start.

Calls run synchronously on the event loop thread: each statement takes microseconds, a thread hop would cost
more than the work. What does not take microseconds, copying the WAL into the database, runs on a thread of its
own (`sqlite_checkpoint`). `synchronous=NORMAL` in WAL mode survives a process crash (what "acknowledged" promises
here); a power cut may lose the last transactions, which is the usual SQLite trade-off.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

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
    utcnow,
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
from shared.store.sqlite_checkpoint import BACKSTOP_PAGES, WAL_SIZE_LIMIT, WalCheckpointer

log = logging.getLogger(__name__)

_TS = "%Y-%m-%dT%H:%M:%S.%fZ"
_SAME_CHUNK = "USING (session_id, speaker, sequence_number)"  # a chunk's audio lives in audio_chunk_bytes


def _ts(value: datetime) -> str:
    return value.astimezone(UTC).strftime(_TS)


def _ts_opt(value: datetime | None) -> str | None:
    return None if value is None else _ts(value)


def sqlite_migrations() -> list[tuple[str, str]]:
    """(name, sql) of every embedded migration, in order."""
    folder = resources.files("shared.store") / "migrations" / "sqlite"
    files = sorted((item for item in folder.iterdir() if item.name.endswith(".sql")), key=lambda i: i.name)
    return [(item.name, item.read_text(encoding="utf-8")) for item in files]


class SQLiteStore:
    """Store protocol on SQLite."""

    name = "sqlite"

    def __init__(self, path: Path | str, *, auto_migrate: bool = True, checkpoint_every_s: float = 1.0) -> None:
        self.path = Path(path) if str(path) != ":memory:" else path
        self.auto_migrate = auto_migrate
        self.checkpoint_every_s = checkpoint_every_s
        self._conn: sqlite3.Connection | None = None
        self._checkpointer: WalCheckpointer | None = None
        self._write_lock = threading.Lock()

    # lifecycle
    async def start(self) -> None:
        if self._conn is not None:
            return
        if isinstance(self.path, Path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open the SQLite database at {self.path}: {exc}") from exc
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        self._conn = conn
        if isinstance(self.path, Path):
            conn.execute(f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
            self._checkpointer = WalCheckpointer(self.path, self.checkpoint_every_s)
            self._checkpointer.start()
        if self.auto_migrate:
            await self.migrate()

    async def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable("the store is not open; call start() first")
        return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; BEGIN IMMEDIATE so two processes on one file serialise instead of failing, and
        a lock so that two threads of this process (a test's thread beside the server's) take turns."""
        with self._write_lock:
            yield from self._transaction(self.conn)

    @contextmanager
    def _write_statement(self) -> Iterator[sqlite3.Connection]:
        """One write that is a single statement, with no BEGIN and COMMIT around it: SQLite makes each statement
        atomic, and on the event loop's path every statement saved is a wait for the GIL saved."""
        with self._write_lock, _write_errors(self.conn):
            yield self.conn

    @staticmethod
    def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreUnavailable(f"the SQLite database is busy or unwritable: {exc}") from exc
        with _write_errors(conn):
            yield conn
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            _rollback(conn)
            raise StoreUnavailable(f"the SQLite commit failed: {exc}") from exc

    async def migrate(self) -> list[str]:
        conn = self.conn
        conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
        done = {row["name"] for row in conn.execute("SELECT name FROM schema_migrations")}
        applied: list[str] = []
        for name, sql in sqlite_migrations():
            if name in done:
                continue
            with self._write() as tx:
                for statement in _split_sql(sql):
                    tx.execute(statement)
                tx.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)", (name, _ts(utcnow())))
            applied.append(name)
        return applied

    # tenants
    async def create_tenant(self, tenant: Tenant, api_key_hash: str) -> None:
        with self._write() as tx:
            tx.execute(
                "INSERT INTO tenants (id, name, api_key_hash, created_at) VALUES (?, ?, ?, ?)",
                (tenant.id, tenant.name, api_key_hash, _ts(tenant.created_at)),
            )

    async def tenant_by_key_hash(self, api_key_hash: str) -> Tenant | None:
        row = self.conn.execute("SELECT * FROM tenants WHERE api_key_hash = ?", (api_key_hash,)).fetchone()
        return tenant_from_row(row) if row else None

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = self.conn.execute("SELECT * FROM tenants WHERE id = ?", (tenant_id,)).fetchone()
        return tenant_from_row(row) if row else None

    async def tenants_named(self, name: str) -> list[Tenant]:
        rows = self.conn.execute("SELECT * FROM tenants WHERE name = ? ORDER BY created_at, id", (name,))
        return [tenant_from_row(row) for row in rows]

    async def set_tenant_webhook(self, tenant_id: str, url: str | None, secret: str | None) -> bool:
        with self._write() as tx:
            cursor = tx.execute(
                "UPDATE tenants SET webhook_url = ?, webhook_secret = coalesce(?, webhook_secret) WHERE id = ?",
                (url, secret, tenant_id),
            )
        return cursor.rowcount > 0

    async def claim_webhook_deliveries(
        self, due_by: datetime, lease_until: datetime, limit: int, *, session_id: str | None = None
    ) -> list[WebhookDelivery]:
        with self._write() as tx:
            rows = tx.execute(
                "SELECT d.id, d.tenant_id, d.session_id, d.event, d.attempts, t.webhook_url AS url,"
                " t.webhook_secret AS secret FROM webhook_deliveries d JOIN tenants t ON t.id = d.tenant_id"
                " WHERE d.delivered_at IS NULL AND d.failed_at IS NULL AND d.next_attempt_at <= ?"
                " AND (? IS NULL OR d.session_id = ?) ORDER BY d.next_attempt_at LIMIT ?",
                (_ts(due_by), session_id, session_id, limit),
            ).fetchall()
            tx.executemany(
                "UPDATE webhook_deliveries SET next_attempt_at = ? WHERE id = ?",
                [(_ts(lease_until), row["id"]) for row in rows],
            )
        return [delivery_from_row(row) for row in rows]

    async def finish_webhook_delivery(
        self, delivery_id: str, *, delivered: bool, at: datetime, next_attempt_at: datetime | None, error: str | None
    ) -> None:
        with self._write() as tx:
            tx.execute(
                "UPDATE webhook_deliveries SET attempts = attempts + 1,"
                " delivered_at = CASE WHEN ? THEN ? END,"
                " failed_at = CASE WHEN NOT ? AND ? IS NULL THEN ? END,"
                " next_attempt_at = coalesce(?, next_attempt_at),"
                " last_error = CASE WHEN ? THEN NULL ELSE ? END WHERE id = ?",
                (
                    delivered,
                    _ts(at),
                    delivered,
                    _ts_opt(next_attempt_at),
                    _ts(at),
                    _ts_opt(next_attempt_at),
                    delivered,
                    error,
                    delivery_id,
                ),
            )

    # sessions
    async def create_session(self, session: Session) -> None:
        with self._write() as tx:
            tx.execute(
                "INSERT INTO sessions (id, tenant_id, candidate_id, position_id, status, speakers, language,"
                " metadata, created_at, last_activity_at, ended_at, machine_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    session.tenant_id,
                    session.candidate_id,
                    session.position_id,
                    session.status.value,
                    json.dumps(list(session.speakers)),
                    session.language,
                    json.dumps(session.metadata),
                    _ts(session.created_at),
                    _ts(session.last_activity_at),
                    _ts_opt(session.ended_at),
                    session.machine_id,
                ),
            )

    async def get_session(self, session_id: str, tenant_id: str | None) -> Session | None:
        if tenant_id is None:
            row = self.conn.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        else:
            row = self.conn.execute(
                "SELECT * FROM sessions WHERE id = ? AND tenant_id = ?", (session_id, tenant_id)
            ).fetchone()
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
        sql = "SELECT * FROM sessions WHERE tenant_id = ?"
        args: list[Any] = [tenant_id]
        if status is not None:
            sql += " AND status = ?"
            args.append(status.value)
        if candidate_id is not None:
            sql += " AND candidate_id = ?"
            args.append(candidate_id)
        if before is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            args += [_ts(before[0]), _ts(before[0]), before[1]]
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        args.append(limit)
        return [session_from_row(row) for row in self.conn.execute(sql, args)]

    async def set_session_status(
        self, session_id: str, status: SessionStatus, at: datetime, *, only_if_active: bool = True
    ) -> Session | None:
        ended_at = None if status is SessionStatus.ACTIVE else _ts(at)
        with self._write() as tx:
            sql = "UPDATE sessions SET status = ?, ended_at = ?, last_activity_at = ? WHERE id = ?"
            if only_if_active:
                sql += " AND status = 'active'"
            tx.execute(sql, (status.value, ended_at, _ts(at), session_id))
            row = tx.execute("SELECT * FROM sessions WHERE id = ?", (session_id,)).fetchone()
        return session_from_row(row) if row else None

    async def close_session(self, session_id: str, status: SessionStatus, at: datetime) -> Session | None:
        with self._write() as tx:
            rows = tx.execute(
                "UPDATE sessions SET status = ?, ended_at = ? WHERE id = ? AND status = 'active' RETURNING *",
                (status.value, _ts(at), session_id),
            ).fetchall()
            if rows:
                tx.execute(
                    "INSERT INTO webhook_deliveries (id, tenant_id, session_id, event, next_attempt_at, created_at)"
                    " SELECT ?, t.id, ?, ?, ?, ? FROM tenants t WHERE t.id = ? AND t.webhook_url IS NOT NULL",
                    (
                        str(uuid.uuid4()),
                        session_id,
                        f"session.{status.value}",
                        _ts(at + timedelta(seconds=FIRST_DELIVERY_AFTER_S)),
                        _ts(at),
                        rows[0]["tenant_id"],
                    ),
                )
        return session_from_row(rows[0]) if rows else None

    async def stale_sessions(self, idle_before: datetime, started_before: datetime, limit: int) -> list[Session]:
        rows = self.conn.execute(
            "SELECT * FROM sessions WHERE status = 'active' AND (last_activity_at < ? OR created_at < ?)"
            " ORDER BY last_activity_at, id LIMIT ?",
            (_ts(idle_before), _ts(started_before), limit),
        )
        return [session_from_row(row) for row in rows]

    async def delete_session(self, tenant_id: str, session_id: str) -> bool:
        with self._write() as tx:
            cursor = tx.execute("DELETE FROM sessions WHERE id = ? AND tenant_id = ?", (session_id, tenant_id))
        return cursor.rowcount > 0

    async def delete_closed_audio(self, closed_before: datetime, limit: int) -> int:
        with self._write() as tx:
            sessions = [
                row[0]
                for row in tx.execute(
                    "SELECT DISTINCT s.id FROM sessions s JOIN audio_chunks c ON c.session_id = s.id"
                    " JOIN audio_chunk_bytes b USING (session_id, speaker, sequence_number)"
                    " WHERE s.status != 'active' AND s.ended_at < ? AND c.state = 'done' LIMIT ?",
                    (_ts(closed_before), limit),
                ).fetchall()
            ]
            tx.executemany(
                "DELETE FROM audio_chunk_bytes WHERE session_id = ? AND (speaker, sequence_number) IN"
                " (SELECT speaker, sequence_number FROM audio_chunks WHERE session_id = ? AND state = 'done')",
                [(session_id, session_id) for session_id in sessions],
            )
        return len(sessions)

    async def delete_closed_sessions(self, closed_before: datetime, limit: int) -> int:
        with self._write() as tx:
            cursor = tx.execute(
                "DELETE FROM sessions WHERE id IN (SELECT id FROM sessions WHERE status != 'active' AND ended_at < ?"
                " LIMIT ?)",
                (_ts(closed_before), limit),
            )
        return cursor.rowcount

    async def add_usage(
        self, tenant_id: str, day: date, *, audio_ms: int = 0, engine_ms: int = 0, engine_calls: int = 0
    ) -> None:
        with self._write() as tx:
            _add_usage(tx, tenant_id, day, audio_ms, engine_ms, engine_calls)

    async def usage(self, tenant_id: str, first: date, last: date) -> list[UsageDay]:
        days: dict[str, list[int]] = {}
        rows = self.conn.execute(
            "SELECT day, audio_ms, engine_ms, engine_calls FROM usage_days WHERE tenant_id = ? AND day BETWEEN ? AND ?",
            (tenant_id, first.isoformat(), last.isoformat()),
        )
        for row in rows:
            days[row["day"]] = [row["audio_ms"], row["engine_ms"], row["engine_calls"], 0, 0]
        start, end = f"{first.isoformat()}T", f"{(last + timedelta(days=1)).isoformat()}T"
        for column, table in ((3, "sessions"), (4, "transcript_entries")):
            counted = self.conn.execute(
                f"SELECT substr(created_at, 1, 10) AS day, COUNT(*) AS n FROM {table}"
                " WHERE tenant_id = ? AND created_at >= ? AND created_at < ? GROUP BY 1",
                (tenant_id, start, end),
            )
            for row in counted:
                days.setdefault(row["day"], [0, 0, 0, 0, 0])[column] = row["n"]
        return [UsageDay(date.fromisoformat(day), *values) for day, values in sorted(days.items())]

    async def claim_reaper_pass(self, owner: str, now: datetime, until: datetime) -> bool:
        with self._write() as tx:
            taken = tx.execute(
                "INSERT INTO reaper_lease (name, owner, until) VALUES ('reaper', ?, ?)"
                " ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, until = excluded.until"
                " WHERE reaper_lease.until < ? OR reaper_lease.owner = excluded.owner RETURNING 1",
                (owner, _ts(until), _ts(now)),
            ).fetchall()
        return bool(taken)

    async def release_reaper_pass(self, owner: str) -> None:
        with self._write() as tx:
            tx.execute("DELETE FROM reaper_lease WHERE name = 'reaper' AND owner = ?", (owner,))

    async def sessions_with_pending_audio(self) -> list[tuple[str, str]]:
        rows = self.conn.execute(
            "SELECT DISTINCT session_id, speaker FROM audio_chunks WHERE state = 'pending' ORDER BY session_id, speaker"
        )
        return [(row["session_id"], row["speaker"]) for row in rows]

    async def stuck_chunks(self, received_before: datetime, due_at: datetime, limit: int) -> list[StuckChunk]:
        rows = self.conn.execute(
            "SELECT c.session_id, c.speaker, c.sequence_number, c.attempts FROM audio_chunks c"
            " JOIN sessions n ON n.id = c.session_id"
            " LEFT JOIN speaker_streams s ON s.session_id = c.session_id AND s.speaker = c.speaker"
            " WHERE c.state = 'pending'"
            " AND (c.sequence_number >= coalesce(s.next_sequence, 0) OR n.status != 'active')"
            " AND c.received_at < ? AND (c.next_attempt_at IS NULL OR c.next_attempt_at <= ?)"
            " ORDER BY c.session_id, c.speaker, c.sequence_number LIMIT ?",
            (_ts(received_before), _ts(due_at), limit),
        )
        return [StuckChunk(r["session_id"], r["speaker"], r["sequence_number"], r["attempts"]) for r in rows]

    async def record_chunk_attempt(
        self, session_id: str, speaker: str, sequences: Sequence[int], next_attempt_at: datetime
    ) -> int:
        with self._write() as tx:
            stream = tx.execute(
                "SELECT next_sequence FROM speaker_streams WHERE session_id = ? AND speaker = ?", (session_id, speaker)
            ).fetchone()
            status = tx.execute("SELECT status FROM sessions WHERE id = ?", (session_id,)).fetchone()
            taken_in_below = stream[0] if stream and status and status[0] == "active" else 0
            cursor = tx.executemany(
                "UPDATE audio_chunks SET attempts = attempts + 1, next_attempt_at = ?"
                " WHERE session_id = ? AND speaker = ? AND sequence_number = ? AND state = 'pending'"
                " AND sequence_number >= ?",
                [(_ts(next_attempt_at), session_id, speaker, seq, taken_in_below) for seq in sequences],
            )
        return cursor.rowcount

    async def fail_chunks(self, session_id: str, speaker: str, sequences: Sequence[int], at: datetime) -> int:
        with self._write() as tx:
            cursor = tx.executemany(
                "UPDATE audio_chunks SET state = 'done', failed_at = ?"
                " WHERE session_id = ? AND speaker = ? AND sequence_number = ? AND state = 'pending'",
                [(_ts(at), session_id, speaker, seq) for seq in sequences],
            )
        return cursor.rowcount

    async def failed_sequences(self, session_id: str) -> dict[str, list[int]]:
        rows = self.conn.execute(
            "SELECT speaker, sequence_number FROM audio_chunks WHERE session_id = ? AND failed_at IS NOT NULL"
            " ORDER BY speaker, sequence_number",
            (session_id,),
        )
        failed: dict[str, list[int]] = {}
        for row in rows:
            failed.setdefault(row["speaker"], []).append(row["sequence_number"])
        return failed

    # audio chunks
    async def insert_chunk(self, chunk: NewChunk) -> InsertOutcome:
        """One statement on the event loop's path (migration 0004's view and trigger): each statement gives up the
        GIL and waits to take it back, so the replay check runs only after the insert was refused."""
        key = (chunk.session_id, chunk.speaker, chunk.sequence_number)
        try:
            with self._write_statement() as conn:
                conn.execute(
                    "INSERT INTO chunk_arrivals (session_id, speaker, sequence_number, mime_type, digest,"
                    " starts_stream, received_at, bytes) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (*key, chunk.mime_type, chunk.digest, int(chunk.starts_stream), _ts(chunk.received_at), chunk.data),
                )
        except StoreConflict:
            existing = self.conn.execute(
                "SELECT digest FROM audio_chunks WHERE session_id = ? AND speaker = ? AND sequence_number = ?", key
            ).fetchone()
            if existing is None:  # refused for another reason than a replay (the session is gone)
                raise
            return InsertOutcome.DUPLICATE if existing["digest"] == chunk.digest else InsertOutcome.CONFLICT
        return InsertOutcome.INSERTED

    async def list_chunks(
        self,
        session_id: str,
        speaker: str,
        *,
        from_sequence: int = 0,
        pending_only: bool = False,
        with_data: bool = False,
    ) -> list[StoredChunk]:
        columns = "c.session_id, c.speaker, c.sequence_number, c.mime_type, c.starts_stream, c.received_at, c.state"
        source = "audio_chunks c"
        if with_data:
            columns += ", coalesce(b.bytes, x'') AS bytes"  # retention may have dropped a closed session's audio
            source += f" LEFT JOIN audio_chunk_bytes b {_SAME_CHUNK}"
        sql = f"SELECT {columns} FROM {source} WHERE c.session_id = ? AND c.speaker = ? AND c.sequence_number >= ?"
        if pending_only:
            sql += " AND c.state = 'pending'"
        sql += " ORDER BY c.sequence_number"
        rows = self.conn.execute(sql, (session_id, speaker, from_sequence))
        return [chunk_from_row(row, bytes(row["bytes"]) if with_data else None) for row in rows]

    async def get_chunk(self, session_id: str, speaker: str, sequence_number: int) -> StoredChunk | None:
        row = self.conn.execute(
            f"SELECT c.*, coalesce(b.bytes, x'') AS bytes FROM audio_chunks c LEFT JOIN audio_chunk_bytes b {_SAME_CHUNK}"
            " WHERE c.session_id = ? AND c.speaker = ? AND c.sequence_number = ?",
            (session_id, speaker, sequence_number),
        ).fetchone()
        return chunk_from_row(row, bytes(row["bytes"])) if row else None

    async def next_sequences(self, session_id: str) -> dict[str, int]:
        rows = self.conn.execute(
            "SELECT speaker, MAX(sequence_number) AS top FROM audio_chunks WHERE session_id = ? GROUP BY speaker",
            (session_id,),
        )
        return {row["speaker"]: row["top"] + 1 for row in rows}

    # speaker streams
    async def claim_stream(
        self, session_id: str, speaker: str, owner: str, lease_seconds: float, now: datetime
    ) -> SpeakerStream | None:
        until = _ts(now + timedelta(seconds=lease_seconds))
        with self._write() as tx:
            tx.execute(
                "INSERT OR IGNORE INTO speaker_streams (session_id, speaker) VALUES (?, ?)", (session_id, speaker)
            )
            cursor = tx.execute(
                "UPDATE speaker_streams SET lease_owner = ?, lease_until = ?"
                " WHERE session_id = ? AND speaker = ?"
                " AND (lease_owner IS NULL OR lease_owner = ? OR lease_until < ?)",
                (owner, until, session_id, speaker, owner, _ts(now)),
            )
            if cursor.rowcount == 0:
                return None
            row = tx.execute(
                "SELECT * FROM speaker_streams WHERE session_id = ? AND speaker = ?", (session_id, speaker)
            ).fetchone()
        return stream_from_row(row)

    async def save_stream(
        self,
        stream: SpeakerStream,
        owner: str,
        *,
        done_sequences: Sequence[int] = (),
        entry: NewEntry | None = None,
        usage: UsageCount | None = None,
    ) -> EntryWrite | None:
        written: EntryWrite | None = None
        with self._write() as tx:
            cursor = tx.execute(
                "UPDATE speaker_streams SET next_sequence = ?, buffer_sequence = ?, buffer_offset = ?,"
                " buffer_start_ms = ?, header_sequence = ?, gap_since = ?, version = version + 1"
                " WHERE session_id = ? AND speaker = ? AND lease_owner = ? AND version = ?",
                (
                    stream.next_sequence,
                    stream.buffer_sequence,
                    stream.buffer_offset,
                    stream.buffer_start_ms,
                    stream.header_sequence,
                    _ts_opt(stream.gap_since),
                    stream.session_id,
                    stream.speaker,
                    owner,
                    stream.version,
                ),
            )
            if cursor.rowcount == 0:
                raise StreamLeaseLost(f"stream {stream.session_id}/{stream.speaker} was taken by another worker")
            if done_sequences:
                tx.executemany(
                    "UPDATE audio_chunks SET state = 'done'"
                    " WHERE session_id = ? AND speaker = ? AND sequence_number = ?",
                    [(stream.session_id, stream.speaker, seq) for seq in done_sequences],
                )
            if usage is not None:
                _add_usage(tx, usage.tenant_id, usage.day, usage.audio_ms, usage.engine_ms, usage.engine_calls)
            if entry is not None:
                written = _insert_entry(tx, entry)
        stream.version += 1
        return written

    async def release_stream(self, session_id: str, speaker: str, owner: str) -> None:
        with self._write() as tx:
            tx.execute(
                "UPDATE speaker_streams SET lease_owner = NULL, lease_until = NULL"
                " WHERE session_id = ? AND speaker = ? AND lease_owner = ?",
                (session_id, speaker, owner),
            )

    # transcript entries
    async def insert_entry(self, entry: NewEntry) -> EntryWrite:
        with self._write() as tx:
            return _insert_entry(tx, entry)

    async def list_entries(self, session_id: str) -> list[TranscriptEntry]:
        rows = self.conn.execute(
            "SELECT * FROM transcript_entries WHERE session_id = ?"
            " ORDER BY start_ms IS NULL, start_ms, speaker, first_sequence",
            (session_id,),
        )
        return [entry_from_row(row) for row in rows]


# Result codes of a write that may well succeed later (a full disk, an I/O error, a lock, a read-only file, no
# memory): the caller gets StoreUnavailable (503 with Retry-After), never a 500. A failed statement under these
# can leave SQLite having rolled the transaction back on its own already.
_TRANSIENT_CODES = frozenset(
    {
        sqlite3.SQLITE_BUSY,
        sqlite3.SQLITE_LOCKED,
        sqlite3.SQLITE_NOMEM,
        sqlite3.SQLITE_READONLY,
        sqlite3.SQLITE_IOERR,
        sqlite3.SQLITE_FULL,
        sqlite3.SQLITE_CANTOPEN,
        sqlite3.SQLITE_PROTOCOL,
    }
)


def _cannot_write_now(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _TRANSIENT_CODES  # extended codes keep the primary in the low byte


@contextmanager
def _write_errors(conn: sqlite3.Connection) -> Iterator[None]:
    """SQLite's errors during a write as the store's own, with what is left of the write rolled back: a refused
    write is StoreConflict, one that may pass later (busy, full, read-only) StoreUnavailable."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        _rollback(conn)
        raise StoreConflict(f"SQLite refused a write that conflicts with stored data: {exc}") from exc
    except sqlite3.OperationalError as exc:
        _rollback(conn)
        if _cannot_write_now(exc):
            raise StoreUnavailable(f"the SQLite database cannot be written now: {exc}") from exc
        raise
    except BaseException:
        _rollback(conn)
        raise


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back what is left of a failed transaction: SQLite may have done it already (SQLITE_FULL, IOERR), and a
    rollback that fails must not hide the error that caused it."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            log.warning("SQLite could not roll back a failed transaction", exc_info=True)


def _add_usage(tx: sqlite3.Connection, tenant_id: str, day: date, audio_ms: int, engine_ms: int, calls: int) -> None:
    tx.execute(
        "INSERT INTO usage_days (tenant_id, day, audio_ms, engine_ms, engine_calls) VALUES (?, ?, ?, ?, ?)"
        " ON CONFLICT (tenant_id, day) DO UPDATE SET audio_ms = audio_ms + excluded.audio_ms,"
        " engine_ms = engine_ms + excluded.engine_ms, engine_calls = engine_calls + excluded.engine_calls",
        (tenant_id, day.isoformat(), audio_ms, engine_ms, calls),
    )


def _insert_entry(tx: sqlite3.Connection, entry: NewEntry) -> EntryWrite:
    existing = tx.execute(
        "SELECT * FROM transcript_entries WHERE session_id = ? AND speaker = ? AND first_sequence = ?",
        (entry.session_id, entry.speaker, entry.first_sequence),
    ).fetchone()
    if existing is not None:
        return EntryWrite(entry_from_row(existing), created=False)
    stored = TranscriptEntry(
        id=str(uuid.uuid4()),
        session_id=entry.session_id,
        tenant_id=entry.tenant_id,
        speaker=entry.speaker,
        first_sequence=entry.first_sequence,
        last_sequence=entry.last_sequence,
        text=entry.text,
        start_ms=entry.start_ms,
        end_ms=entry.end_ms,
        language=entry.language,
        confidence=entry.confidence,
        engine=entry.engine,
        created_at=utcnow(),
    )
    tx.execute(
        "INSERT INTO transcript_entries (id, tenant_id, session_id, speaker, first_sequence, last_sequence,"
        " text, start_ms, end_ms, language, confidence, engine, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            stored.id,
            stored.tenant_id,
            stored.session_id,
            stored.speaker,
            stored.first_sequence,
            stored.last_sequence,
            stored.text,
            stored.start_ms,
            stored.end_ms,
            stored.language,
            stored.confidence,
            stored.engine,
            _ts(stored.created_at),
        ),
    )
    return EntryWrite(stored, created=True)


def _split_sql(sql: str) -> list[str]:
    """Statements of a migration file (ours hold no semicolons inside literals); a trigger's body, which holds
    semicolons of its own, stays one statement."""
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    statements: list[str] = []
    pending = ""
    for part in "\n".join(lines).split(";"):
        pending += part + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                statements.append(pending.strip())
            pending = ""
    return statements
