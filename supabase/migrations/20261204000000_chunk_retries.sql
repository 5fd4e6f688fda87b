-- Retries of audio whose processing failed, run by the session reaper: how often a chunk was tried, when it may
-- be tried again, and when it was given up (`state` becomes 'done' then, with `failed_at` saying it made no text).
alter table audio_chunks
    add column attempts integer not null default 0,
    add column next_attempt_at timestamptz,
    add column failed_at timestamptz;
create index audio_chunks_failed on audio_chunks (session_id, speaker, sequence_number) where failed_at is not null;

-- Pending chunks that processing left behind: no run took them into their speaker's stream (at or past its
-- next_sequence), or their session is closed (nothing will come to finish their utterance); arrived before
-- `p_received_before`, their next attempt due at `p_due_at`.
create or replace function stuck_chunks(p_received_before timestamptz, p_due_at timestamptz, p_max_rows integer)
returns table (session_id text, speaker text, sequence_number integer, attempts integer)
language sql stable
set search_path from current
as $$
    select c.session_id, c.speaker, c.sequence_number, c.attempts
      from audio_chunks c
      join sessions n on n.id = c.session_id
      left join speaker_streams s on s.session_id = c.session_id and s.speaker = c.speaker
     where c.state = 'pending'
       and (c.sequence_number >= coalesce(s.next_sequence, 0) or n.status <> 'active')
       and c.received_at < p_received_before
       and (c.next_attempt_at is null or c.next_attempt_at <= p_due_at)
     order by c.session_id, c.speaker, c.sequence_number
     limit p_max_rows;
$$;

-- One more failed try of those chunks that are still stuck, and when to try them next.
create or replace function record_chunk_attempt(
    p_session_id text, p_speaker text, p_sequences integer[], p_next_attempt_at timestamptz
) returns integer
language sql
set search_path from current
as $$
    with tried as (
        update audio_chunks c set attempts = c.attempts + 1, next_attempt_at = p_next_attempt_at
         where c.session_id = p_session_id and c.speaker = p_speaker and c.sequence_number = any (p_sequences)
           and c.state = 'pending'
           and (c.sequence_number >= coalesce((select s.next_sequence from speaker_streams s
                                                where s.session_id = p_session_id and s.speaker = p_speaker), 0)
                or (select n.status from sessions n where n.id = p_session_id) <> 'active')
        returning 1
    )
    select count(*)::integer from tried;
$$;

-- Give up on chunks still pending: they leave the queue, marked failed, and stay listed as such.
create or replace function fail_chunks(p_session_id text, p_speaker text, p_sequences integer[], p_at timestamptz)
returns integer
language sql
set search_path from current
as $$
    with failed as (
        update audio_chunks c set state = 'done', failed_at = p_at
         where c.session_id = p_session_id and c.speaker = p_speaker and c.sequence_number = any (p_sequences)
           and c.state = 'pending'
        returning 1
    )
    select count(*)::integer from failed;
$$;

-- Per speaker, the chunks given up on, in order.
create or replace function failed_sequences(p_session_id text)
returns table (speaker text, sequence_number integer)
language sql stable
set search_path from current
as $$
    select c.speaker, c.sequence_number from audio_chunks c
     where c.session_id = p_session_id and c.failed_at is not null
     order by c.speaker, c.sequence_number;
$$;

-- As every atomic step: callable by the bridge (owner, or service_role over REST) only.
do $grants$
begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        return;
    end if;
    revoke execute on function
        stuck_chunks(timestamptz, timestamptz, integer),
        record_chunk_attempt(text, text, integer[], timestamptz),
        fail_chunks(text, text, integer[], timestamptz),
        failed_sequences(text)
    from public, authenticated;
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke execute on function
            stuck_chunks(timestamptz, timestamptz, integer),
            record_chunk_attempt(text, text, integer[], timestamptz),
            fail_chunks(text, text, integer[], timestamptz),
            failed_sequences(text)
        from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function
            stuck_chunks(timestamptz, timestamptz, integer),
            record_chunk_attempt(text, text, integer[], timestamptz),
            fail_chunks(text, text, integer[], timestamptz),
            failed_sequences(text)
        to service_role;
    end if;
end
$grants$;
