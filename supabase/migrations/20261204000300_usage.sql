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

do $grants$
begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        return;
    end if;
    alter table usage_days enable row level security;
    revoke all on usage_days from public, authenticated;
    revoke execute on function add_usage(text, date, bigint, bigint, integer), tenant_usage(text, date, date)
    from public, authenticated;
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on usage_days from anon;
        revoke execute on function add_usage(text, date, bigint, bigint, integer), tenant_usage(text, date, date)
        from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant all on usage_days to service_role;
        drop policy if exists service_role_all on usage_days;
        create policy service_role_all on usage_days for all to service_role using (true) with check (true);
        grant execute on function add_usage(text, date, bigint, bigint, integer), tenant_usage(text, date, date)
        to service_role;
    end if;
end
$grants$;
