"""Audio encrypted at rest (`AUDIO_ENCRYPTION_KEY`, `AUDIO_ENCRYPTION_KEYS_OLD`), on real SQLite and Postgres.

What is checked is what a user or an operator sees: the transcript, the HTTP answers, the rows and files as the
database keeps them, and the start-up error.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import sqlite3
import subprocess
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import numpy as np
import pytest

from bridge.app import create_app
from bridge.cli import main
from bridge.offline import wav_bytes
from shared.credentials import hash_api_key, new_api_key
from shared.errors import AudioUndecryptable, ConfigurationError
from shared.models import InsertOutcome, Tenant, utcnow
from shared.settings import Settings
from shared.store.encrypted import key_id
from shared.store.factory import create_store
from shared.stt.base import Transcriber
from tests.conftest import KeepOpen
from tests.helpers import FIXTURES, bearer, load_pcm, new_session, new_tenant, post_chunk, wav_chunks
from tests.store.test_conformance import chunk, make_session, make_tenant

KEY_A = base64.b64encode(bytes(range(32))).decode()
KEY_B = base64.b64encode(bytes(range(100, 132))).decode()
ID_A, ID_B = key_id(base64.b64decode(KEY_A)), key_id(base64.b64decode(KEY_B))
ENVELOPE = b"\x89IBAE\r\n\x01"  # what a stored envelope begins with: magic and version 1
SPEECH = FIXTURES / "stt" / "i_tell_you.wav"  # "I tell you it is not poison, she cried." in two 2 s chunks
SILENCE = wav_bytes(np.zeros(32_000, dtype=np.float32))


@dataclass
class Database:
    """Where a test's bridge keeps its data, and a way in that goes around the bridge."""

    kind: str
    overrides: dict[str, Any]
    data_dir: Path
    dsn: str | None = None
    sqlite_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.sqlite_path = self.data_dir / "bridge.sqlite3"

    async def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of every table, read straight from the database."""
        if self.dsn is None:
            with sqlite3.connect(self.sqlite_path) as conn:
                names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                return {name: conn.execute(f'SELECT * FROM "{name}"').fetchall() for name in names}
        conn = await asyncpg.connect(self.dsn)
        try:
            names = await conn.fetch(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
            )
            return {r[0]: [tuple(row) for row in await conn.fetch(f'SELECT * FROM "{r[0]}"')] for r in names}
        finally:
            await conn.close()

    async def chunk_rows(self, session_id: str) -> dict[int, tuple[bytes, str]]:
        """(bytes, digest) of each of a session's chunks, as stored."""
        if self.dsn is None:
            with sqlite3.connect(self.sqlite_path) as conn:
                found = conn.execute(
                    "SELECT c.sequence_number, b.bytes, c.digest FROM audio_chunks c"
                    " JOIN audio_chunk_bytes b USING (session_id, speaker, sequence_number) WHERE c.session_id = ?",
                    (session_id,),
                ).fetchall()
        else:
            conn = await asyncpg.connect(self.dsn)
            try:
                found = await conn.fetch(
                    "SELECT sequence_number, bytes, digest FROM audio_chunks WHERE session_id = $1", session_id
                )
            finally:
                await conn.close()
        return {row[0]: (bytes(row[1]), row[2]) for row in found}

    async def copy_audio(self, source: tuple[str, int], target: tuple[str, int]) -> None:
        """Overwrite one chunk's stored audio with another's, as someone with write access to the database could."""
        (source_session, source_seq), (target_session, target_seq) = source, target
        if self.dsn is None:
            with sqlite3.connect(self.sqlite_path) as conn:
                conn.execute(
                    "UPDATE audio_chunk_bytes SET bytes = (SELECT bytes FROM audio_chunk_bytes"
                    " WHERE session_id = ? AND sequence_number = ?) WHERE session_id = ? AND sequence_number = ?",
                    (source_session, source_seq, target_session, target_seq),
                )
            return
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(
                "UPDATE audio_chunks SET bytes = (SELECT bytes FROM audio_chunks"
                " WHERE session_id = $1 AND sequence_number = $2) WHERE session_id = $3 AND sequence_number = $4",
                source_session,
                source_seq,
                target_session,
                target_seq,
            )
        finally:
            await conn.close()

    def files(self) -> bytes:
        """Every file of the data dir, byte for byte (the SQLite database, its WAL, anything else kept there)."""
        return b"".join(path.read_bytes() for path in sorted(self.data_dir.rglob("*")) if path.is_file())


@pytest.fixture(params=["sqlite", "postgres"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    """An empty SQLite data dir, or an empty schema of the real Postgres."""
    data_dir = tmp_path / "data"  # the data dir `make_settings` gives the bridge
    if request.param == "sqlite":
        return Database("sqlite", {"store": "sqlite"}, data_dir)
    dsn: str = request.getfixturevalue("pg_dsn")
    return Database("postgres", {"store": "postgres", "database_url": dsn}, data_dir, dsn)


class NotLoaded(KeepOpen):
    """The local engine, reported as still loading: chunks are stored and answered `queued`, nothing is read."""

    @property
    def ready(self) -> bool:
        return False

    async def start(self) -> None:
        return None

    async def wait_ready(self) -> None:
        await asyncio.Event().wait()


def needles(posted: list[bytes]) -> dict[str, bytes]:
    """Pieces of the posted audio a leak would show: each chunk's RIFF header, 32-byte windows of its PCM
    (from busy stretches only, so that a run of zeros elsewhere cannot match), and its plain SHA-256."""
    found: dict[str, bytes] = {}
    for n, data in enumerate(posted):
        found[f"chunk {n} RIFF header"] = data[:44]
        found[f"chunk {n} sha256"] = hashlib.sha256(data).hexdigest().encode()
        windows = [data[at : at + 32] for at in range(44, len(data) - 32, 32)]
        busy = [window for window in windows if len(set(window)) >= 24]
        for window in busy[:: max(1, len(busy) // 6)][:6]:
            found[f"chunk {n} PCM at {data.index(window)}"] = window
    return found


def leaks(haystack: bytes, pieces: dict[str, bytes]) -> list[str]:
    return [name for name, piece in pieces.items() if piece in haystack]


def row_bytes(rows: dict[str, list[tuple[Any, ...]]]) -> bytes:
    """Every value of every column of every row, as bytes, one after the other."""
    values = (value for table in rows.values() for row in table for value in row)
    return b"\x00".join(v if isinstance(v, bytes) else str(v).encode() for v in values)


async def seed_tenant(settings: Settings) -> str:
    """A tenant's API key, made as `tenant create` does, through a store of this test's own (the app's Postgres
    pool lives on its test client's event loop)."""
    store = create_store(settings)
    await store.start()
    try:
        api_key = new_api_key()
        await store.create_tenant(Tenant(id=str(uuid.uuid4()), name="acme", created_at=utcnow()), hash_api_key(api_key))
    finally:
        await store.close()
    return api_key


async def start_up_error(app_client: Callable[..., Any], **settings: Any) -> str:
    """The ConfigurationError a bridge with these settings stops its start-up with (the test client hands it on
    inside an exception group)."""
    errors: list[BaseException] = []
    try:
        async with app_client(**settings):
            pass
    except* ConfigurationError as group:
        errors.extend(leaves(group))
    assert errors, "the bridge started"
    return str(errors[0])


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        found.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return found


async def transcript_text(client: Any, token: str, session_id: str) -> str:
    response = await client.get(f"/sessions/{session_id}/transcript?format=text", headers=bearer(token))
    assert response.status_code == 200, response.text
    text: str = response.text
    return text


async def post_speech_and_scan(
    app_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    engine: Transcriber,
    database: Database,
    key: str | None,
) -> tuple[str, list[str], list[str]]:
    """Post the speech through the bridge, end the session; (transcript, leaks in the rows, leaks in the files)."""
    posted = wav_chunks(load_pcm(SPEECH))
    settings: dict[str, Any] = {"stt_engine": "local", "partials": "off", "audio_encryption_key": key}
    api_key = await seed_tenant(make_settings(**settings, **database.overrides))
    async with app_client(transcriber=engine, **settings, **database.overrides) as client:
        session_id, token = await new_session(client, api_key)
        for seq, data in enumerate(posted):
            response = await post_chunk(client, token, session_id, "candidate", seq, data)
            assert response.json()["status"] == "accepted", response.text
        assert (await client.post(f"/sessions/{session_id}/end", headers=bearer(token))).status_code == 200
        text = await transcript_text(client, token, session_id)
    pieces = needles(posted)
    return text, leaks(row_bytes(await database.rows()), pieces), leaks(database.files(), pieces)


async def test_posted_audio_is_in_no_stored_row_with_a_key_and_in_them_without(
    app_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    local_transcriber: Transcriber,
    database: Database,
) -> None:
    """With AUDIO_ENCRYPTION_KEY, posted speech is transcribed as usual and no column of any table (nor any file of
    the data dir) holds its RIFF header, a 32-byte window of its PCM or its SHA-256; the same speech posted again
    without a key is found by the same search."""
    pieces = needles(wav_chunks(load_pcm(SPEECH)))
    assert sum("PCM" in name for name in pieces) == 12  # 6 windows of each of the 2 chunks
    text, in_rows, in_files = await post_speech_and_scan(app_client, make_settings, local_transcriber, database, KEY_A)
    assert "not poison" in text.lower()
    assert in_rows == []
    assert in_files == []
    plain_text, in_rows, _ = await post_speech_and_scan(app_client, make_settings, local_transcriber, database, None)
    assert plain_text == text
    assert in_rows == list(pieces)


async def test_a_key_rotation_reads_old_audio_writes_new_and_refuses_a_missing_old_key(
    app_client: Callable[..., Any],
    make_settings: Callable[..., Settings],
    local_transcriber: Transcriber,
    database: Database,
) -> None:
    """Audio stored under key A is transcribed after a restart with KEY=B and KEYS_OLD=A, new audio is stored under
    B, and a restart that lacks A while an interview recorded under A is active is refused at start-up."""
    posted = wav_chunks(load_pcm(SPEECH))
    common: dict[str, Any] = {"stt_engine": "local", "partials": "off", **database.overrides}
    api_key = await seed_tenant(make_settings(audio_encryption_key=KEY_A, **common))
    async with app_client(transcriber=NotLoaded(local_transcriber), audio_encryption_key=KEY_A, **common) as client:
        finished, finished_token = await new_session(client, api_key)
        running, running_token = await new_session(client, api_key)
        for seq, data in enumerate(posted):
            assert (await post_chunk(client, finished_token, finished, "candidate", seq, data)).json()[
                "status"
            ] == "queued"
        assert (await post_chunk(client, running_token, running, "candidate", 0, posted[0])).json()[
            "status"
        ] == "queued"

    rotated = {"audio_encryption_key": KEY_B, "audio_encryption_keys_old": [KEY_A]}
    async with app_client(transcriber=local_transcriber, **rotated, **common) as client:
        late = await post_chunk(client, finished_token, finished, "candidate", 2, SILENCE)
        assert late.json()["status"] == "accepted"
        assert (await client.post(f"/sessions/{finished}/end", headers=bearer(finished_token))).status_code == 200
        assert "not poison" in (await transcript_text(client, finished_token, finished)).lower()
    stored = await database.chunk_rows(finished)
    assert {seq: data[: len(ENVELOPE) + 4] for seq, (data, _) in stored.items()} == {
        0: ENVELOPE + ID_A,
        1: ENVELOPE + ID_A,
        2: ENVELOPE + ID_B,
    }

    for refused in ({"audio_encryption_key": KEY_B}, {}):
        message = await start_up_error(app_client, transcriber=local_transcriber, **refused, **common)
        assert f"chunk 0 of speaker 'candidate' in session {running}" in message
        assert f"key id {ID_A.hex()}" in message
        assert ("AUDIO_ENCRYPTION_KEYS_OLD" if refused else "set AUDIO_ENCRYPTION_KEY") in message


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"AUDIO_ENCRYPTION_KEY": "not base64 at all!"}, "AUDIO_ENCRYPTION_KEY is not base64"),
        ({"AUDIO_ENCRYPTION_KEY": base64.b64encode(b"sixteen byte key").decode()}, "AUDIO_ENCRYPTION_KEY must be"),
        ({"AUDIO_ENCRYPTION_KEY": ""}, "AUDIO_ENCRYPTION_KEY is set but empty"),
        ({"AUDIO_ENCRYPTION_KEY": KEY_B, "AUDIO_ENCRYPTION_KEYS_OLD": f"{KEY_A},abcd"}, "KEYS_OLD (item 2) must be"),
    ],
    ids=["not-base64", "16-bytes", "empty", "old-key-short"],
)
def test_a_malformed_key_stops_start_up_with_one_line_naming_it(
    variables: dict[str, str],
    named: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A key that is not base64 of 32 bytes stops the command with exit 2 and one line naming the variable (never
    its value), before anything is stored."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert main(["tenant", "create", "acme", "--data-dir", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = captured.err.splitlines()
    assert line.startswith("interview-bridge: ") and named in line
    assert "make one with `openssl rand -base64 32`" in line
    assert all(value not in line for value in variables.values() if len(value) > 4)
    assert not (tmp_path / "bridge.sqlite3").exists()


def test_a_malformed_key_stops_the_server_being_built(make_settings: Callable[..., Settings]) -> None:
    """`serve` builds the app before it listens: a malformed key fails there, naming the variable."""
    with pytest.raises(ConfigurationError, match="AUDIO_ENCRYPTION_KEY must be base64 of exactly 32 bytes"):
        create_app(make_settings(audio_encryption_key=base64.b64encode(b"x" * 31).decode()))


async def test_audio_moved_to_another_chunk_does_not_decrypt(
    make_settings: Callable[..., Settings], database: Database
) -> None:
    """Stored audio copied into another sequence's row, or another session's, is refused with AudioUndecryptable
    naming the chunk, never read as that chunk's audio; the rows left alone still read back."""
    store = create_store(make_settings(audio_encryption_key=KEY_A, **database.overrides))
    await store.start()
    try:
        tenant = await make_tenant(store)
        first, second = await make_session(store, tenant), await make_session(store, tenant)
        for session in (first, second):
            for seq in (0, 1):
                assert await store.insert_chunk(chunk(session, seq, b"RIFF%d%s" % (seq, session.id.encode())))
        await database.copy_audio((first.id, 0), (first.id, 1))
        await database.copy_audio((first.id, 0), (second.id, 0))
        with pytest.raises(AudioUndecryptable, match=f"chunk 1 of speaker 'candidate' in session {first.id}"):
            await store.get_chunk(first.id, "candidate", 1)
        with pytest.raises(AudioUndecryptable, match="altered, or it belongs to another chunk"):
            await store.list_chunks(first.id, "candidate", with_data=True)
        with pytest.raises(AudioUndecryptable, match=f"chunk 0 of speaker 'candidate' in session {second.id}"):
            await store.get_chunk(second.id, "candidate", 0)
        kept = await store.get_chunk(first.id, "candidate", 0)
        assert kept is not None and kept.data == b"RIFF0" + first.id.encode()
        kept = await store.get_chunk(second.id, "candidate", 1)
        assert kept is not None and kept.data == b"RIFF1" + second.id.encode()
    finally:
        await store.close()


async def test_replays_stay_duplicates_and_other_audio_a_conflict_across_a_rotation(
    app_client: Callable[..., Any], make_settings: Callable[..., Settings], database: Database
) -> None:
    """Encrypted, a replayed chunk is answered `duplicate` and other audio at its sequence 409 `sequence_conflict`,
    also after a restart with a new key; the stored row keeps the envelope and no plain hash of the audio."""
    first, other = wav_chunks(load_pcm(SPEECH))
    common: dict[str, Any] = {"stt_engine": "simulate", "partials": "off", **database.overrides}
    api_key = await seed_tenant(make_settings(audio_encryption_key=KEY_A, **common))
    async with app_client(audio_encryption_key=KEY_A, **common) as client:
        session_id, token = await new_session(client, api_key)
        assert (await post_chunk(client, token, session_id, "candidate", 0, first)).json()["status"] == "accepted"
        assert (await post_chunk(client, token, session_id, "candidate", 0, first)).json()["status"] == "duplicate"
        conflict = await post_chunk(client, token, session_id, "candidate", 0, other)
        assert (conflict.status_code, conflict.json()["error"]) == (409, "sequence_conflict")
    rotated = {"audio_encryption_key": KEY_B, "audio_encryption_keys_old": [KEY_A]}
    async with app_client(**rotated, **common) as client:
        assert (await post_chunk(client, token, session_id, "candidate", 0, first)).json()["status"] == "duplicate"
        conflict = await post_chunk(client, token, session_id, "candidate", 0, other)
        assert (conflict.status_code, conflict.json()["error"]) == (409, "sequence_conflict")
    [(data, digest)] = (await database.chunk_rows(session_id)).values()
    assert data.startswith(ENVELOPE + ID_A)
    assert hashlib.sha256(first).hexdigest() not in digest


async def test_a_store_without_keys_refuses_encrypted_rows_it_meets_later(
    make_settings: Callable[..., Settings], database: Database
) -> None:
    """Audio stored encrypted after start-up (by another bridge with a key) is refused by a bridge without one with
    AudioUndecryptable naming its key id, not handed on as audio."""
    keyed = create_store(make_settings(audio_encryption_key=KEY_A, **database.overrides))
    plain = create_store(make_settings(**database.overrides))
    await keyed.start()
    await plain.start()
    try:
        tenant = await make_tenant(keyed)
        session = await make_session(keyed, tenant)
        assert await keyed.insert_chunk(chunk(session, 0, b"RIFFsecret")) is InsertOutcome.INSERTED
        with pytest.raises(AudioUndecryptable, match=f"encrypted under key id {ID_A.hex()}"):
            await plain.get_chunk(session.id, "candidate", 0)
        assert (await plain.list_chunks(session.id, "candidate"))[0].data is None  # listing without audio still works
    finally:
        await plain.close()
        await keyed.close()


def test_serve_over_audio_under_another_key_exits_2_with_one_line_before_listening(tmp_path: Path) -> None:
    """`serve` with a key that cannot read the stored audio prints one line naming the variable and exits 2,
    before it says where it listens."""
    from tests.test_server_process import BIN, base_env, free_port

    data_dir = tmp_path / "data"
    asyncio.run(store_one_chunk(Settings(data_dir=data_dir, audio_encryption_key=KEY_A)))
    env = base_env(data_dir, free_port(), AUDIO_ENCRYPTION_KEY=KEY_B, STT_ENGINE="simulate")
    done = subprocess.run([str(BIN / "interview-bridge"), "serve"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "AUDIO_ENCRYPTION_KEY" in lines[0] and "listening" not in done.stderr, lines
    assert KEY_B not in done.stderr and KEY_A not in done.stderr


async def store_one_chunk(settings: Settings) -> None:
    """An active session with one stored chunk, written under the settings' key."""
    store = create_store(settings)
    await store.start()
    try:
        tenant = await make_tenant(store)
        session = await make_session(store, tenant)
        await store.insert_chunk(chunk(session, 0, SILENCE))
    finally:
        await store.close()


async def test_a_clear_chunk_that_looks_like_an_envelope_is_refused_so_start_up_stays_open(
    app_client: Callable[..., Any], make_settings: Callable[..., Settings]
) -> None:
    """Without a key, a continuation chunk that begins with the envelope's marker is 400 invalid_audio and is not
    stored, so no tenant can plant a row that would stop the next start-up; a real continuation still passes."""
    from tests.api.test_browser_formats import recorder_chunks

    webm = recorder_chunks("webm_chunk")
    planted = ENVELOPE + bytes(4) + bytes(range(256)) * 4
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        assert (await post_chunk(client, token, session_id, "candidate", 0, webm[0], mime="audio/webm")).is_success
        refused = await post_chunk(client, token, session_id, "candidate", 1, planted, mime="audio/webm")
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_audio"
        passed = await post_chunk(client, token, session_id, "candidate", 1, webm[1], mime="audio/webm")
        assert passed.is_success and passed.json()["status"] != "duplicate"
        state = (await client.get(f"/sessions/{session_id}", headers=bearer(token))).json()
    assert state["next_sequence"] == {"candidate": 2}
    restarted = create_store(make_settings())
    await restarted.start()  # the start-up check finds nothing it cannot open
    await restarted.close()
