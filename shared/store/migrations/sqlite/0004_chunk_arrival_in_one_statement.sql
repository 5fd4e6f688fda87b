-- A chunk's arrival in one statement. The event loop stores each chunk before it answers, and every SQLite
-- statement gives up the GIL, then waits to take it back from the audio threads: under load each such wait can
-- last their switch interval (docs/benchmarks.md). Storing a chunk took six statements (BEGIN, the replay check,
-- two inserts, the session's activity, COMMIT); an INSERT into this view is one, and SQLite runs the trigger inside
-- that statement's own transaction, so the chunk, its audio and the session's activity are stored all or nothing.
-- A replay fails the first insert's primary key and changes nothing; the store then reads the stored digest.
CREATE VIEW chunk_arrivals AS
    SELECT c.session_id, c.speaker, c.sequence_number, c.mime_type, c.digest, c.starts_stream, c.received_at, b.bytes
    FROM audio_chunks c JOIN audio_chunk_bytes b USING (session_id, speaker, sequence_number);

CREATE TRIGGER chunk_arrival INSTEAD OF INSERT ON chunk_arrivals
BEGIN
    INSERT INTO audio_chunks (session_id, speaker, sequence_number, mime_type, digest, starts_stream, received_at, state)
        VALUES (NEW.session_id, NEW.speaker, NEW.sequence_number, NEW.mime_type, NEW.digest, NEW.starts_stream,
                NEW.received_at, 'pending');
    INSERT INTO audio_chunk_bytes (session_id, speaker, sequence_number, bytes)
        VALUES (NEW.session_id, NEW.speaker, NEW.sequence_number, NEW.bytes);
    UPDATE sessions SET last_activity_at = NEW.received_at
        WHERE id = NEW.session_id AND last_activity_at < NEW.received_at;
END;
