-- Retries of audio whose processing failed, run by the session reaper: how often a chunk was tried, when it may
-- be tried again, and when it was given up (`state` becomes 'done' then, with `failed_at` saying it made no text).
ALTER TABLE audio_chunks ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE audio_chunks ADD COLUMN next_attempt_at TEXT;
ALTER TABLE audio_chunks ADD COLUMN failed_at TEXT;
CREATE INDEX audio_chunks_failed ON audio_chunks (session_id, speaker, sequence_number) WHERE failed_at IS NOT NULL;
