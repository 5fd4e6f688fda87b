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

do $grants$
begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        return;
    end if;
    revoke execute on function delete_closed_audio(timestamptz, integer), delete_closed_sessions(timestamptz, integer)
    from public, authenticated;
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke execute on function delete_closed_audio(timestamptz, integer),
                                   delete_closed_sessions(timestamptz, integer)
        from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function delete_closed_audio(timestamptz, integer),
                                  delete_closed_sessions(timestamptz, integer)
        to service_role;
    end if;
end
$grants$;
