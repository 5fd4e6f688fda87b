-- Supabase only: row-level security for the bridge's tables. Plain Postgres skips this file (the guard below
-- looks for Supabase's `auth.jwt()` and its `authenticated` role), so the same folder migrates both.
--
-- * RLS is enabled on every table. With no policy for them, `anon` sees nothing and nobody but the bridge
--   writes: the bridge connects as the table owner (direct Postgres) or as `service_role` (REST), both of
--   which bypass RLS; `service_role` also gets an explicit all-rows policy, so it works without BYPASSRLS.
-- * A signed-in user (role `authenticated`) may SELECT the rows of the tenant named in their JWT's
--   `app_metadata.tenant_id` (set by the server, not editable by the user, unlike `user_metadata`); nothing else.
--   `tenants.api_key_hash` stays hidden (column grant).
-- * The atomic-step functions are callable by `service_role` only.
do $rls$
begin
    if to_regnamespace('auth') is null
       or to_regprocedure('auth.jwt()') is null
       or not exists (select 1 from pg_roles where rolname = 'authenticated') then
        raise notice 'interview-bridge: no auth.jwt() or role authenticated here (plain Postgres), RLS skipped';
        return;
    end if;

    alter table tenants enable row level security;
    alter table sessions enable row level security;
    alter table audio_chunks enable row level security;
    alter table speaker_streams enable row level security;
    alter table transcript_entries enable row level security;

    -- users read, never write
    revoke all on tenants, sessions, audio_chunks, speaker_streams, transcript_entries from public;
    revoke all on tenants, sessions, audio_chunks, speaker_streams, transcript_entries from authenticated;
    grant select (id, name, created_at) on tenants to authenticated;
    grant select on sessions, audio_chunks, speaker_streams, transcript_entries to authenticated;
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on tenants, sessions, audio_chunks, speaker_streams, transcript_entries from anon;
    end if;

    drop policy if exists tenant_read on tenants;
    create policy tenant_read on tenants for select to authenticated
        using (id = (select auth.jwt() -> 'app_metadata' ->> 'tenant_id'));

    drop policy if exists tenant_read on sessions;
    create policy tenant_read on sessions for select to authenticated
        using (tenant_id = (select auth.jwt() -> 'app_metadata' ->> 'tenant_id'));

    drop policy if exists tenant_read on transcript_entries;
    create policy tenant_read on transcript_entries for select to authenticated
        using (tenant_id = (select auth.jwt() -> 'app_metadata' ->> 'tenant_id'));

    drop policy if exists tenant_read on audio_chunks;
    create policy tenant_read on audio_chunks for select to authenticated
        using (exists (select 1 from sessions s
                        where s.id = audio_chunks.session_id
                          and s.tenant_id = (select auth.jwt() -> 'app_metadata' ->> 'tenant_id')));

    drop policy if exists tenant_read on speaker_streams;
    create policy tenant_read on speaker_streams for select to authenticated
        using (exists (select 1 from sessions s
                        where s.id = speaker_streams.session_id
                          and s.tenant_id = (select auth.jwt() -> 'app_metadata' ->> 'tenant_id')));

    revoke execute on function
        insert_audio_chunk(text, text, integer, text, bytea, text, boolean, timestamptz),
        insert_transcript_entry(jsonb),
        claim_speaker_stream(text, text, text, double precision, timestamptz),
        save_speaker_stream(text, text, text, integer, integer, integer, integer, integer, integer, timestamptz,
                            integer[], jsonb),
        release_speaker_stream(text, text, text),
        next_sequences(text),
        sessions_with_pending_audio()
    from public, authenticated;
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke execute on function
            insert_audio_chunk(text, text, integer, text, bytea, text, boolean, timestamptz),
            insert_transcript_entry(jsonb),
            claim_speaker_stream(text, text, text, double precision, timestamptz),
            save_speaker_stream(text, text, text, integer, integer, integer, integer, integer, integer,
                                timestamptz, integer[], jsonb),
            release_speaker_stream(text, text, text),
            next_sequences(text),
            sessions_with_pending_audio()
        from anon;
    end if;

    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant all on tenants, sessions, audio_chunks, speaker_streams, transcript_entries to service_role;
        grant execute on function
            insert_audio_chunk(text, text, integer, text, bytea, text, boolean, timestamptz),
            insert_transcript_entry(jsonb),
            claim_speaker_stream(text, text, text, double precision, timestamptz),
            save_speaker_stream(text, text, text, integer, integer, integer, integer, integer, integer,
                                timestamptz, integer[], jsonb),
            release_speaker_stream(text, text, text),
            next_sequences(text),
            sessions_with_pending_audio()
        to service_role;
        drop policy if exists service_role_all on tenants;
        create policy service_role_all on tenants for all to service_role using (true) with check (true);
        drop policy if exists service_role_all on sessions;
        create policy service_role_all on sessions for all to service_role using (true) with check (true);
        drop policy if exists service_role_all on audio_chunks;
        create policy service_role_all on audio_chunks for all to service_role using (true) with check (true);
        drop policy if exists service_role_all on speaker_streams;
        create policy service_role_all on speaker_streams for all to service_role using (true) with check (true);
        drop policy if exists service_role_all on transcript_entries;
        create policy service_role_all on transcript_entries for all to service_role
            using (true) with check (true);
    end if;
end;
$rls$;
