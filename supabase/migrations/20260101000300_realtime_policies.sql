-- Supabase only: who may receive (and send) Realtime broadcasts on a session's private topic.
-- Plain Postgres has no `realtime.messages` and skips this file (the guard below), so the same folder migrates both.
--
-- Supabase Realtime authorises a private channel by asking Postgres, as the joining user and with
-- `realtime.topic()` set to the channel's topic, whether that user can SELECT (to receive) or INSERT (to send)
-- a row of `realtime.messages`. The bridge's session and viewer tokens are JWTs with role `authenticated` and
-- the claims `tenant_id`, `session_id` and `scope` ('session' or 'viewer'):
-- * receive: a token admits its holder to topic `session:<its session_id>` only, whatever the tenant claims;
-- * send: only a 'session' token, only on its own topic, and never the events the bridge alone emits
--   (transcript_entry, transcript_partial, session_status). Viewer tokens never send.
-- The bridge itself sends with the service_role key, which bypasses RLS.
do $realtime$
begin
    if to_regclass('realtime.messages') is null
       or to_regprocedure('realtime.topic()') is null
       or to_regprocedure('auth.jwt()') is null
       or not exists (select 1 from pg_roles where rolname = 'authenticated') then
        raise notice 'interview-bridge: no realtime.messages here (plain Postgres), realtime policies skipped';
        return;
    end if;

    drop policy if exists interview_bridge_session_receive on realtime.messages;
    create policy interview_bridge_session_receive on realtime.messages
        for select to authenticated
        using (
            realtime.messages.extension = 'broadcast'
            and (select auth.jwt() ->> 'session_id') is not null
            and (select auth.jwt() ->> 'tenant_id') is not null
            and (select realtime.topic()) = 'session:' || (select auth.jwt() ->> 'session_id')
        );

    drop policy if exists interview_bridge_session_send on realtime.messages;
    create policy interview_bridge_session_send on realtime.messages
        for insert to authenticated
        with check (
            realtime.messages.extension = 'broadcast'
            and (select auth.jwt() ->> 'scope') = 'session'
            and (select auth.jwt() ->> 'tenant_id') is not null
            and (select realtime.topic()) = 'session:' || (select auth.jwt() ->> 'session_id')
            and realtime.messages.event not in ('transcript_entry', 'transcript_partial', 'session_status')
        );
end
$realtime$;
