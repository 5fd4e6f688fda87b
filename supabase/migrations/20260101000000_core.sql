-- Core schema of the interview bridge: portable to any PostgreSQL 15+ (no extension, no Supabase object).
-- Same tables and meanings as the embedded SQLite schema (shared/store/migrations/sqlite/0001_initial.sql).
-- Ids are text (the bridge makes uuid4 strings) in the "C" collation, like `speaker`, so rows sort byte by
-- byte exactly as in SQLite. Names are unqualified: the schema is the migrating role's search_path (`public`
-- on Supabase). The Postgres store records applied files in `schema_migrations`; Supabase's CLI in its own table.

create table tenants (
    id           text collate "C" primary key,
    name         text not null,
    api_key_hash text not null unique,
    created_at   timestamptz not null default now()
);

create table sessions (
    id               text collate "C" primary key,
    tenant_id        text collate "C" not null references tenants (id) on delete cascade,
    candidate_id     text,
    position_id      text,
    status           text not null default 'active' check (status in ('active', 'ended', 'abandoned')),
    speakers         text[] not null default '{}',
    language         text,
    metadata         jsonb not null default '{}'::jsonb,
    created_at       timestamptz not null default now(),
    last_activity_at timestamptz not null default now(),
    ended_at         timestamptz,
    machine_id       text,
    -- lets transcript_entries reference (session, tenant) together: an entry can never name another tenant
    unique (id, tenant_id)
);
-- listing a tenant's sessions, newest first, paged by (created_at, id)
create index sessions_by_tenant on sessions (tenant_id, created_at desc, id desc);
-- the reaper: active sessions by last activity
create index sessions_active_by_activity on sessions (last_activity_at) where status = 'active';

create table audio_chunks (
    session_id      text collate "C" not null references sessions (id) on delete cascade,
    speaker         text collate "C" not null,
    sequence_number integer not null check (sequence_number >= 0),
    mime_type       text,
    bytes           bytea not null,
    digest          text not null,
    starts_stream   boolean not null default false,
    received_at     timestamptz not null default now(),
    state           text not null default 'pending' check (state in ('pending', 'done')),
    primary key (session_id, speaker, sequence_number)
);
-- recovery and assembly: pending chunks of a speaker, in sequence order
create index audio_chunks_pending on audio_chunks (session_id, speaker, sequence_number) where state = 'pending';

create table speaker_streams (
    session_id      text collate "C" not null references sessions (id) on delete cascade,
    speaker         text collate "C" not null,
    next_sequence   integer not null default 0,
    buffer_sequence integer not null default 0,
    buffer_offset   integer not null default 0,
    buffer_start_ms integer not null default 0,
    header_sequence integer,
    gap_since       timestamptz,
    version         integer not null default 0,
    lease_owner     text,
    lease_until     timestamptz,
    primary key (session_id, speaker)
);

create table transcript_entries (
    id             text collate "C" primary key default gen_random_uuid()::text,
    tenant_id      text collate "C" not null references tenants (id) on delete cascade,
    session_id     text collate "C" not null,
    speaker        text collate "C" not null,
    first_sequence integer not null,
    last_sequence  integer not null,
    text           text not null,
    start_ms       integer,
    end_ms         integer,
    language       text,
    confidence     double precision,
    engine         text not null,
    created_at     timestamptz not null default now(),
    unique (session_id, speaker, first_sequence),
    foreign key (session_id, tenant_id) references sessions (id, tenant_id) on delete cascade
);
-- the transcript of a session in display order
create index transcript_entries_by_session on transcript_entries (session_id, start_ms, speaker, first_sequence);
-- row-level security filters on tenant_id
create index transcript_entries_by_tenant on transcript_entries (tenant_id, created_at);
