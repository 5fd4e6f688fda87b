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

do $grants$
begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        return;
    end if;
    alter table webhook_deliveries enable row level security;
    revoke all on webhook_deliveries from public, authenticated;
    revoke select (webhook_secret) on tenants from authenticated;
    revoke execute on function
        close_session(text, text, timestamptz, text, timestamptz),
        claim_webhook_deliveries(timestamptz, timestamptz, integer, text),
        finish_webhook_delivery(text, boolean, timestamptz, timestamptz, text)
    from public, authenticated;
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on webhook_deliveries from anon;
        revoke execute on function
            close_session(text, text, timestamptz, text, timestamptz),
            claim_webhook_deliveries(timestamptz, timestamptz, integer, text),
            finish_webhook_delivery(text, boolean, timestamptz, timestamptz, text)
        from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant all on webhook_deliveries to service_role;
        drop policy if exists service_role_all on webhook_deliveries;
        create policy service_role_all on webhook_deliveries for all to service_role using (true) with check (true);
        grant execute on function
            close_session(text, text, timestamptz, text, timestamptz),
            claim_webhook_deliveries(timestamptz, timestamptz, integer, text),
            finish_webhook_delivery(text, boolean, timestamptz, timestamptz, text)
        to service_role;
    end if;
end
$grants$;
