-- Session lifecycle (the session reaper): retries of stuck audio, the webhook outbox, retention, usage counters
-- and the one-pass-at-a-time lease.

-- Retries of audio whose processing failed, run by the session reaper: how often a chunk was tried, when it may
-- be tried again, and when it was given up (`state` becomes 'done' then, with `failed_at` saying it made no text).
ALTER TABLE audio_chunks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audio_chunks ADD COLUMN next_attempt_at TEXT;
ALTER TABLE audio_chunks ADD COLUMN failed_at TEXT;
CREATE INDEX audio_chunks_failed ON audio_chunks (session_id, speaker, sequence_number) WHERE failed_at IS NOT NULL;

-- A tenant's webhook (where to POST a session's transcript when it ends, and the key that signs it) and the
-- delivery outbox: a row per closed session of a tenant with a webhook, written in the same step that closes
-- the session, retried with backoff until delivered or given up, so that a restart loses nothing.
ALTER TABLE tenants ADD COLUMN webhook_url TEXT;
ALTER TABLE tenants ADD COLUMN webhook_secret TEXT;
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    session_id TEXT NOT NULL UNIQUE REFERENCES sessions (id) ON DELETE CASCADE,
    event TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TEXT NOT NULL,
    delivered_at TEXT,
    failed_at TEXT,
    last_error TEXT,
    created_at TEXT NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND failed_at IS NULL;

-- Retention: the reaper finds closed sessions by when they closed.
CREATE INDEX sessions_closed ON sessions (ended_at) WHERE status != 'active';

-- Per tenant and UTC day: audio seconds taken in, audio seconds sent to the engine, engine calls. Sessions and
-- entries per day are counted from their own tables when asked.
CREATE TABLE usage_days (
    tenant_id TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    day TEXT NOT NULL,
    audio_ms INTEGER NOT NULL DEFAULT 0,
    engine_ms INTEGER NOT NULL DEFAULT 0,
    engine_calls INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);

-- One reaper pass at a time across every process on this database: a pass holds this lease while it runs.
CREATE TABLE reaper_lease (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    until TEXT NOT NULL
);
