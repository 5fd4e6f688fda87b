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

do $grants$
begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        return;
    end if;
    alter table reaper_lease enable row level security;
    revoke all on reaper_lease from public, authenticated;
    revoke execute on function claim_reaper_pass(text, timestamptz, timestamptz), release_reaper_pass(text)
    from public, authenticated;
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on reaper_lease from anon;
        revoke execute on function claim_reaper_pass(text, timestamptz, timestamptz), release_reaper_pass(text)
        from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant all on reaper_lease to service_role;
        grant execute on function claim_reaper_pass(text, timestamptz, timestamptz), release_reaper_pass(text)
        to service_role;
    end if;
end
$grants$;
