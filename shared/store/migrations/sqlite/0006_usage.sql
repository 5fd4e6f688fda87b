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
