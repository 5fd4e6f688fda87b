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

do $grants$
begin
    if not exists (select 1 from pg_roles where rolname = 'authenticated') then
        return;
    end if;
    revoke execute on function save_speaker_stream_counted(text, text, text, integer, integer, integer, integer,
        integer, integer, timestamptz, integer[], jsonb, text, date, bigint, bigint, integer) from public, authenticated;
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke execute on function save_speaker_stream_counted(text, text, text, integer, integer, integer, integer,
            integer, integer, timestamptz, integer[], jsonb, text, date, bigint, bigint, integer) from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function save_speaker_stream_counted(text, text, text, integer, integer, integer, integer,
            integer, integer, timestamptz, integer[], jsonb, text, date, bigint, bigint, integer) to service_role;
    end if;
end
$grants$;
