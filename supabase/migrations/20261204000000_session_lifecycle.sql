-- Session lifecycle (the session reaper): retries of stuck audio, the webhook outbox, retention, usage counters,
-- the one-pass-at-a-time lease, and stream saves that count usage in their own transaction.

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

-- A tenant's webhook (where to POST a session's transcript when it ends, and the key that signs it) and the
-- delivery outbox: a row per closed session of a tenant with a webhook, written in the same step that closes
-- the session, retried with backoff until delivered or given up, so that a restart loses nothing.
alter table tenants add column webhook_url text, add column webhook_secret text;

create table webhook_deliveries (
    id              text collate "C" primary key,
    tenant_id       text collate "C" not null references tenants (id) on delete cascade,
    session_id      text collate "C" not null unique references sessions (id) on delete cascade,
    event           text not null,
    attempts        integer not null default 0,
    next_attempt_at timestamptz not null,
    delivered_at    timestamptz,
    failed_at       timestamptz,
    last_error      text,
    created_at      timestamptz not null default now()
);
create index webhook_deliveries_due on webhook_deliveries (next_attempt_at)
    where delivered_at is null and failed_at is null;

-- Close an active session (ended or abandoned) and, when its tenant has a webhook, put its delivery in the
-- outbox, due at `p_deliver_after`, in one step. Returns the closed session's row, or null when it was not
-- active: only one caller ever gets the row.
create or replace function close_session(
    p_session_id text, p_status text, p_at timestamptz, p_delivery_id text, p_deliver_after timestamptz
) returns jsonb
language plpgsql
set search_path from current
as $$
declare
    v_row sessions;
begin
    update sessions set status = p_status, ended_at = p_at
     where id = p_session_id and status = 'active'
    returning * into v_row;
    if not found then
        return null;
    end if;
    insert into webhook_deliveries (id, tenant_id, session_id, event, next_attempt_at, created_at)
    select p_delivery_id, t.id, v_row.id, 'session.' || p_status, p_deliver_after, p_at
      from tenants t where t.id = v_row.tenant_id and t.webhook_url is not null;
    return to_jsonb(v_row);
end;
$$;

-- Take up to `p_max_rows` deliveries due by `p_due_by` (of one session when `p_session_id` is given), each for
-- `p_lease_until`: a concurrent pass skips them. Returns them with their tenant's URL and signing key.
create or replace function claim_webhook_deliveries(
    p_due_by timestamptz, p_lease_until timestamptz, p_max_rows integer, p_session_id text
) returns table (id text, tenant_id text, session_id text, event text, attempts integer, url text, secret text)
language sql
set search_path from current
as $$
    with due as (
        select d.id from webhook_deliveries d
         where d.delivered_at is null and d.failed_at is null and d.next_attempt_at <= p_due_by
           and (p_session_id is null or d.session_id = p_session_id)
         order by d.next_attempt_at
         limit p_max_rows
         for update skip locked
    ), claimed as (
        update webhook_deliveries d set next_attempt_at = p_lease_until
          from due where d.id = due.id
        returning d.id, d.tenant_id, d.session_id, d.event, d.attempts
    )
    select c.id, c.tenant_id, c.session_id, c.event, c.attempts, t.webhook_url, t.webhook_secret
      from claimed c join tenants t on t.id = c.tenant_id;
$$;

-- What became of one attempt: delivered, to be tried again at `p_next_attempt_at`, or (null) given up.
create or replace function finish_webhook_delivery(
    p_id text, p_delivered boolean, p_at timestamptz, p_next_attempt_at timestamptz, p_error text
) returns void
language sql
set search_path from current
as $$
    update webhook_deliveries
       set attempts = attempts + 1,
           delivered_at = case when p_delivered then p_at end,
           failed_at = case when not p_delivered and p_next_attempt_at is null then p_at end,
           next_attempt_at = coalesce(p_next_attempt_at, next_attempt_at),
           last_error = case when p_delivered then null else p_error end
     where id = p_id;
$$;

-- Retention: the reaper drops the audio of sessions closed before a cut-off (the chunk rows stay, so sequence
-- numbers and failed chunks remain listed), and whole sessions closed before another.
create index sessions_closed on sessions (ended_at) where status <> 'active';

-- Empty the audio of up to `p_max_sessions` sessions closed before `p_closed_before`; how many sessions.
create or replace function delete_closed_audio(p_closed_before timestamptz, p_max_sessions integer)
returns integer
language sql
set search_path from current
as $$
    with closed as (
        select s.id from sessions s
         where s.status <> 'active' and s.ended_at < p_closed_before
           and exists (select 1 from audio_chunks c where c.session_id = s.id and c.state = 'done'
                                                      and octet_length(c.bytes) > 0)
         limit p_max_sessions
    ), emptied as (
        update audio_chunks c set bytes = ''::bytea
          from closed where c.session_id = closed.id and c.state = 'done' and octet_length(c.bytes) > 0
        returning c.session_id
    )
    select count(distinct session_id)::integer from emptied;
$$;

-- Delete up to `p_max_sessions` sessions closed before `p_closed_before`, with everything they hold.
create or replace function delete_closed_sessions(p_closed_before timestamptz, p_max_sessions integer)
returns integer
language sql
set search_path from current
as $$
    with doomed as (
        select s.id from sessions s
         where s.status <> 'active' and s.ended_at < p_closed_before
         limit p_max_sessions
    ), deleted as (
        delete from sessions s using doomed where s.id = doomed.id returning 1
    )
    select count(*)::integer from deleted;
$$;

-- Per tenant and UTC day: audio seconds taken in, audio seconds sent to the engine, engine calls. Sessions and
-- entries per day are counted from their own tables when asked.
create table usage_days (
    tenant_id    text collate "C" not null references tenants (id) on delete cascade,
    day          date not null,
    audio_ms     bigint not null default 0,
    engine_ms    bigint not null default 0,
    engine_calls integer not null default 0,
    primary key (tenant_id, day)
);

create or replace function add_usage(
    p_tenant_id text, p_day date, p_audio_ms bigint, p_engine_ms bigint, p_engine_calls integer
) returns void
language sql
set search_path from current
as $$
    insert into usage_days (tenant_id, day, audio_ms, engine_ms, engine_calls)
    values (p_tenant_id, p_day, p_audio_ms, p_engine_ms, p_engine_calls)
    on conflict (tenant_id, day) do update
       set audio_ms = usage_days.audio_ms + excluded.audio_ms,
           engine_ms = usage_days.engine_ms + excluded.engine_ms,
           engine_calls = usage_days.engine_calls + excluded.engine_calls;
$$;

-- Every day from `p_first` to `p_last` (UTC) with any usage, ascending.
create or replace function tenant_usage(p_tenant_id text, p_first date, p_last date)
returns table (day date, audio_ms bigint, engine_ms bigint, engine_calls integer, sessions integer, entries integer)
language sql stable
set search_path from current
as $$
    with counters as (
        select u.day, u.audio_ms, u.engine_ms, u.engine_calls from usage_days u
         where u.tenant_id = p_tenant_id and u.day between p_first and p_last
    ), made as (
        select (s.created_at at time zone 'UTC')::date as day, count(*)::integer as sessions from sessions s
         where s.tenant_id = p_tenant_id
           and s.created_at >= p_first::timestamp at time zone 'UTC'
           and s.created_at < (p_last + 1)::timestamp at time zone 'UTC'
         group by 1
    ), said as (
        select (e.created_at at time zone 'UTC')::date as day, count(*)::integer as entries
          from transcript_entries e
         where e.tenant_id = p_tenant_id
           and e.created_at >= p_first::timestamp at time zone 'UTC'
           and e.created_at < (p_last + 1)::timestamp at time zone 'UTC'
         group by 1
    ), days as (
        select c.day from counters c union select m.day from made m union select x.day from said x
    )
    select d.day, coalesce(c.audio_ms, 0)::bigint, coalesce(c.engine_ms, 0)::bigint,
           coalesce(c.engine_calls, 0)::integer, coalesce(m.sessions, 0)::integer, coalesce(x.entries, 0)::integer
      from days d
      left join counters c on c.day = d.day
      left join made m on m.day = d.day
      left join said x on x.day = d.day
     order by d.day;
$$;

-- One reaper pass at a time across every process and machine on this database: a pass holds this lease while
-- it runs (a row, not an advisory lock: session-level locks do not hold through a transaction-mode pooler).
create table reaper_lease (
    name  text primary key,
    owner text not null,
    until timestamptz not null
);

-- True when `p_owner` now holds the lease until `p_until` (it was free, expired at `p_now`, or already its own).
create or replace function claim_reaper_pass(p_owner text, p_now timestamptz, p_until timestamptz)
returns boolean
language sql
set search_path from current
as $$
    with taken as (
        insert into reaper_lease (name, owner, until) values ('reaper', p_owner, p_until)
        on conflict (name) do update set owner = excluded.owner, until = excluded.until
         where reaper_lease.until < p_now or reaper_lease.owner = excluded.owner
        returning 1
    )
    select exists (select 1 from taken);
$$;

create or replace function release_reaper_pass(p_owner text) returns void
language sql
set search_path from current
as $$
    delete from reaper_lease where name = 'reaper' and owner = p_owner;
$$;

-- Usage counted in the same transaction as the speaker stream's progress: the audio a run took in and the
-- engine time of the entry it stored are added exactly when that progress is stored, so a crash or a lost lease
-- neither loses nor doubles them (the run that redoes the work counts it then).
create or replace function save_speaker_stream_counted(
    p_session_id text,
    p_speaker text,
    p_owner text,
    p_version integer,
    p_next_sequence integer,
    p_buffer_sequence integer,
    p_buffer_offset integer,
    p_buffer_start_ms integer,
    p_header_sequence integer,
    p_gap_since timestamptz,
    p_done_sequences integer[],
    p_entry jsonb,
    p_tenant_id text,
    p_usage_day date,
    p_audio_ms bigint,
    p_engine_ms bigint,
    p_engine_calls integer
) returns jsonb
language plpgsql
set search_path from current
as $$
declare
    v_result jsonb;
begin
    v_result := save_speaker_stream(p_session_id, p_speaker, p_owner, p_version, p_next_sequence, p_buffer_sequence,
                                    p_buffer_offset, p_buffer_start_ms, p_header_sequence, p_gap_since,
                                    p_done_sequences, p_entry);
    if (v_result ->> 'saved')::boolean then
        perform add_usage(p_tenant_id, p_usage_day, p_audio_ms, p_engine_ms, p_engine_calls);
    end if;
    return v_result;
end;
$$;

-- Tables and functions of this file: Supabase's signed-in users and anon get nothing (RLS on, no policy for
-- them); the bridge uses them as the table owner (direct Postgres) or as service_role (REST).
do $grants$
declare
    v_tables text[] := array['webhook_deliveries', 'usage_days', 'reaper_lease'];
    v_functions text[] := array[
        'stuck_chunks(timestamptz, timestamptz, integer)',
        'record_chunk_attempt(text, text, integer[], timestamptz)',
        'fail_chunks(text, text, integer[], timestamptz)',
        'failed_sequences(text)',
        'close_session(text, text, timestamptz, text, timestamptz)',
        'claim_webhook_deliveries(timestamptz, timestamptz, integer, text)',
        'finish_webhook_delivery(text, boolean, timestamptz, timestamptz, text)',
        'delete_closed_audio(timestamptz, integer)',
        'delete_closed_sessions(timestamptz, integer)',
        'add_usage(text, date, bigint, bigint, integer)',
        'tenant_usage(text, date, date)',
        'claim_reaper_pass(text, timestamptz, timestamptz)',
        'release_reaper_pass(text)',
        'save_speaker_stream_counted(text, text, text, integer, integer, integer, integer, integer, integer,'
            ' timestamptz, integer[], jsonb, text, date, bigint, bigint, integer)'
    ];
    v_name text;
    v_roles text;
begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        return;  -- plain Postgres: the bridge's own role owns everything
    end if;
    v_roles := 'public, authenticated' || case when exists (select 1 from pg_roles where rolname = 'anon')
                                                then ', anon' else '' end;
    foreach v_name in array v_tables loop
        execute format('alter table %I enable row level security', v_name);
        execute format('revoke all on %I from %s', v_name, v_roles);
    end loop;
    foreach v_name in array v_functions loop
        execute format('revoke execute on function %s from %s', v_name, v_roles);
    end loop;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        foreach v_name in array v_tables loop
            execute format('grant all on %I to service_role', v_name);
            execute format('drop policy if exists service_role_all on %I', v_name);
            execute format('create policy service_role_all on %I for all to service_role using (true) with check (true)',
                           v_name);
        end loop;
        foreach v_name in array v_functions loop
            execute format('grant execute on function %s to service_role', v_name);
        end loop;
    end if;
end
$grants$;
