-- The steps that must be atomic, as SQL functions: the Postgres store calls them over asyncpg, the Supabase
-- store through PostgREST's `rpc()`. Portable to any PostgreSQL 15+. SECURITY INVOKER: they run with the
-- caller's rights (the bridge's own role or service_role), never more. `set search_path from current` pins
-- the schema the functions were created in, whoever calls them.

-- Persist a chunk once. Returns 'inserted', 'duplicate' (same digest) or 'conflict' (other content), and on
-- insert moves the session's last_activity_at forward to the chunk's arrival time.
create or replace function insert_audio_chunk(
    p_session_id text,
    p_speaker text,
    p_sequence_number integer,
    p_mime_type text,
    p_bytes bytea,
    p_digest text,
    p_starts_stream boolean,
    p_received_at timestamptz
) returns text
language plpgsql
set search_path from current
as $$
declare
    v_digest text;
begin
    insert into audio_chunks (session_id, speaker, sequence_number, mime_type, bytes, digest, starts_stream,
                              received_at, state)
    values (p_session_id, p_speaker, p_sequence_number, p_mime_type, p_bytes, p_digest, p_starts_stream,
            p_received_at, 'pending')
    on conflict (session_id, speaker, sequence_number) do nothing;
    if found then
        update sessions set last_activity_at = p_received_at
         where id = p_session_id and last_activity_at < p_received_at;
        return 'inserted';
    end if;
    select c.digest into v_digest from audio_chunks c
     where c.session_id = p_session_id and c.speaker = p_speaker and c.sequence_number = p_sequence_number;
    return case when v_digest = p_digest then 'duplicate' else 'conflict' end;
end;
$$;

-- Store a transcript entry once per (session_id, speaker, first_sequence). `p_entry` holds the columns of
-- transcript_entries (id and created_at optional). Returns {"created": bool, "entry": <the stored row>}.
create or replace function insert_transcript_entry(p_entry jsonb) returns jsonb
language plpgsql
set search_path from current
as $$
declare
    r transcript_entries;
    v_row transcript_entries;
begin
    r := jsonb_populate_record(null::transcript_entries, p_entry);
    insert into transcript_entries (id, tenant_id, session_id, speaker, first_sequence, last_sequence, text,
                                    start_ms, end_ms, language, confidence, engine, created_at)
    values (coalesce(r.id, gen_random_uuid()::text), r.tenant_id, r.session_id, r.speaker, r.first_sequence,
            r.last_sequence, r.text, r.start_ms, r.end_ms, r.language, r.confidence, r.engine,
            coalesce(r.created_at, now()))
    on conflict (session_id, speaker, first_sequence) do nothing
    returning * into v_row;
    if found then
        return jsonb_build_object('created', true, 'entry', to_jsonb(v_row));
    end if;
    -- a concurrent insert of the same key has committed by now (ON CONFLICT waited for it)
    select * into v_row from transcript_entries e
     where e.session_id = r.session_id and e.speaker = r.speaker and e.first_sequence = r.first_sequence;
    return jsonb_build_object('created', false, 'entry', to_jsonb(v_row));
end;
$$;

-- Take a speaker's stream for p_lease_seconds, creating it at first use. Returns the stream row, or no row
-- when another owner holds an unexpired lease. Two claimers serialise on the row lock; the loser re-reads the
-- winner's lease and gets nothing.
create or replace function claim_speaker_stream(
    p_session_id text,
    p_speaker text,
    p_owner text,
    p_lease_seconds double precision,
    p_now timestamptz
) returns setof speaker_streams
language plpgsql
set search_path from current
as $$
begin
    insert into speaker_streams (session_id, speaker) values (p_session_id, p_speaker)
    on conflict (session_id, speaker) do nothing;
    return query
        update speaker_streams s
           set lease_owner = p_owner,
               lease_until = p_now + make_interval(secs => p_lease_seconds)
         where s.session_id = p_session_id and s.speaker = p_speaker
           and (s.lease_owner is null or s.lease_owner = p_owner or s.lease_until < p_now)
        returning s.*;
end;
$$;

-- Atomically: write the stream state (fenced by lease owner and version), mark p_done_sequences done and store
-- p_entry idempotently. Returns {"saved": false} and writes nothing when p_owner lost the lease or the version
-- moved on; else {"saved": true, "written": null | {"created", "entry"}}. The version goes up by one.
create or replace function save_speaker_stream(
    p_session_id text,
    p_speaker text,
    p_owner text,
    p_version integer,
    p_next_sequence integer,
    p_buffer_sequence integer,
    p_buffer_offset integer,
    p_buffer_start_ms integer,
    p_header_sequence integer default null,
    p_gap_since timestamptz default null,
    p_done_sequences integer[] default '{}',
    p_entry jsonb default null
) returns jsonb
language plpgsql
set search_path from current
as $$
declare
    v_written jsonb;
begin
    update speaker_streams s
       set next_sequence = p_next_sequence,
           buffer_sequence = p_buffer_sequence,
           buffer_offset = p_buffer_offset,
           buffer_start_ms = p_buffer_start_ms,
           header_sequence = p_header_sequence,
           gap_since = p_gap_since,
           version = s.version + 1
     where s.session_id = p_session_id and s.speaker = p_speaker
       and s.lease_owner = p_owner and s.version = p_version;
    if not found then
        return jsonb_build_object('saved', false);
    end if;
    if coalesce(cardinality(p_done_sequences), 0) > 0 then
        update audio_chunks c set state = 'done'
         where c.session_id = p_session_id and c.speaker = p_speaker
           and c.sequence_number = any (p_done_sequences) and c.state <> 'done';
    end if;
    if p_entry is not null and jsonb_typeof(p_entry) = 'object' then
        v_written := insert_transcript_entry(p_entry);
    end if;
    return jsonb_build_object('saved', true, 'written', v_written);
end;
$$;

-- Give a stream's lease back (only its holder can).
create or replace function release_speaker_stream(p_session_id text, p_speaker text, p_owner text) returns void
language sql
set search_path from current
as $$
    update speaker_streams set lease_owner = null, lease_until = null
     where session_id = p_session_id and speaker = p_speaker and lease_owner = p_owner;
$$;

-- Per speaker, one past the highest sequence number stored: where a reloaded page resumes.
create or replace function next_sequences(p_session_id text)
returns table (speaker text, next_sequence integer)
language sql stable
set search_path from current
as $$
    select c.speaker, max(c.sequence_number) + 1 from audio_chunks c
     where c.session_id = p_session_id group by c.speaker order by c.speaker;
$$;

-- (session_id, speaker) pairs that still have pending chunks, for recovery after a restart or an outage.
create or replace function sessions_with_pending_audio()
returns table (session_id text, speaker text)
language sql stable
set search_path from current
as $$
    select distinct c.session_id, c.speaker from audio_chunks c where c.state = 'pending'
     order by c.session_id, c.speaker;
$$;
