-- The embedded schema: same tables and meanings as supabase/migrations, in SQLite's dialect.
CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    api_key_hash TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    candidate_id TEXT,
    position_id TEXT,
    status TEXT NOT NULL CHECK (status IN ('active', 'ended', 'abandoned')),
    speakers TEXT NOT NULL DEFAULT '[]',
    language TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL,
    last_activity_at TEXT NOT NULL,
    ended_at TEXT,
    machine_id TEXT
);
CREATE INDEX sessions_by_tenant ON sessions (tenant_id, created_at DESC, id DESC);
CREATE INDEX sessions_active_by_activity ON sessions (status, last_activity_at);

CREATE TABLE audio_chunks (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    speaker TEXT NOT NULL,
    sequence_number INTEGER NOT NULL,
    mime_type TEXT,
    bytes BLOB NOT NULL,
    digest TEXT NOT NULL,
    starts_stream INTEGER NOT NULL DEFAULT 0,
    received_at TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done')),
    PRIMARY KEY (session_id, speaker, sequence_number)
);
CREATE INDEX audio_chunks_pending ON audio_chunks (state, session_id, speaker) WHERE state = 'pending';

CREATE TABLE speaker_streams (
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    speaker TEXT NOT NULL,
    next_sequence INTEGER NOT NULL DEFAULT 0,
    buffer_sequence INTEGER NOT NULL DEFAULT 0,
    buffer_offset INTEGER NOT NULL DEFAULT 0,
    buffer_start_ms INTEGER NOT NULL DEFAULT 0,
    header_sequence INTEGER,
    gap_since TEXT,
    version INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until TEXT,
    PRIMARY KEY (session_id, speaker)
);

CREATE TABLE transcript_entries (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
    session_id TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    speaker TEXT NOT NULL,
    first_sequence INTEGER NOT NULL,
    last_sequence INTEGER NOT NULL,
    text TEXT NOT NULL,
    start_ms INTEGER,
    end_ms INTEGER,
    language TEXT,
    confidence REAL,
    engine TEXT NOT NULL,
    created_at TEXT NOT NULL,
    UNIQUE (session_id, speaker, first_sequence)
);
CREATE INDEX transcript_entries_by_session ON transcript_entries (session_id, start_ms, speaker, first_sequence);
