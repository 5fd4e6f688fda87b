-- A chunk's audio in a table of its own. SQLite keeps a row's columns in order, and `bytes` (64 KB of WAV) came
-- before `digest`, `state` and the rest: listing a speaker's pending chunks walked every chunk's overflow pages,
-- and marking a chunk done rewrote its audio. Measured under load, that listing was the largest cost of a run.
CREATE TABLE audio_chunk_bytes (
    session_id TEXT NOT NULL,
    speaker TEXT NOT NULL,
    sequence_number INTEGER NOT NULL,
    bytes BLOB NOT NULL,
    PRIMARY KEY (session_id, speaker, sequence_number),
    FOREIGN KEY (session_id, speaker, sequence_number)
        REFERENCES audio_chunks (session_id, speaker, sequence_number) ON DELETE CASCADE
);
INSERT INTO audio_chunk_bytes (session_id, speaker, sequence_number, bytes)
    SELECT session_id, speaker, sequence_number, bytes FROM audio_chunks;
ALTER TABLE audio_chunks DROP COLUMN bytes;
DROP INDEX IF EXISTS audio_chunks_pending;
CREATE INDEX audio_chunks_pending ON audio_chunks (session_id, speaker, sequence_number) WHERE state = 'pending';
