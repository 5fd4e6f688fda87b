"""The `interview-bridge` command's machine-readable contract."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from bridge.cli import main, start_up_lines
from shared.settings import Settings
from shared.store.sqlite import SQLiteStore
from tests.helpers import FIXTURES

SPEECH = FIXTURES / "live" / "two_sentences.flac"


def test_tenant_create_prints_one_json_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`tenant create NAME` prints exactly one JSON line with the tenant id and its API key."""
    assert main(["tenant", "create", "acme", "--data-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    created = json.loads(lines[0])
    assert set(created) == {"tenant_id", "api_key", "webhook_secret"}
    assert created["api_key"].startswith("ibk_")
    assert created["webhook_secret"].startswith("whsec_")


def test_tenant_webhook_is_set_at_creation_and_changed_by_update(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--webhook-url` is kept with the tenant; `tenant update NAME` changes it, and plain http beyond loopback is
    refused with exit 2 and the reason."""
    data = ["--data-dir", str(tmp_path)]
    assert main(["tenant", "create", "acme", "--webhook-url", "https://hooks.example/a", *data]) == 0
    created = json.loads(capsys.readouterr().out)
    assert main(["tenant", "update", "acme", "--webhook-url", "https://hooks.example/b", *data]) == 0
    assert json.loads(capsys.readouterr().out) == {
        "tenant_id": created["tenant_id"],
        "webhook_url": "https://hooks.example/b",
    }
    assert main(["tenant", "update", "acme", "--webhook-url", "http://hooks.example/c", *data]) == 2
    assert "must use https" in capsys.readouterr().err
    assert main(["tenant", "update", "nobody", "--webhook-url", "https://hooks.example/d", *data]) == 2
    assert "no tenant 'nobody'" in capsys.readouterr().err

    async def stored() -> tuple[str | None, str | None]:
        store = SQLiteStore(tmp_path / "bridge.sqlite3")
        await store.start()
        try:
            [tenant] = await store.tenants_named("acme")
            return tenant.webhook_url, tenant.webhook_secret
        finally:
            await store.close()

    assert asyncio.run(stored()) == ("https://hooks.example/b", created["webhook_secret"])


def test_db_migrate_applies_then_finds_nothing_new(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`db migrate` applies the schema once and reports nothing new the second time."""
    assert main(["db", "migrate", "--data-dir", str(tmp_path)]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["applied"]
    assert main(["db", "migrate", "--data-dir", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"applied": []}


def test_transcribe_json_and_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`transcribe --format json` prints one object per file; an unreadable file is reported and exits 1."""
    missing = tmp_path / "missing.wav"
    code = main(["transcribe", str(SPEECH), str(missing), "--engine", "simulate", "--format", "json"])
    assert code == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["file"] for line in lines] == [str(SPEECH), str(missing)]
    assert lines[0]["text"].startswith("[simulated")
    assert len(lines[0]["entries"]) == 2
    assert set(lines[1]) == {"file", "error"}


def test_transcribe_text_prints_a_line_per_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`transcribe --format text` prints one line per file, an empty line for silence."""
    silence = FIXTURES / "audio" / "silence_2s.wav"
    assert main(["transcribe", str(SPEECH), str(silence), "--engine", "simulate", "--chunk-seconds", "0"]) == 0
    lines = capsys.readouterr().out.split("\n")
    assert lines[0].startswith("[simulated")
    assert lines[1] == ""


def test_transcribe_text_reports_errors_on_stderr_and_nothing_about_resuming(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """In text mode an undecodable file prints an empty stdout line and its error on stderr; a throwaway store
    never reports resumed speaker streams."""
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunkjunk")
    with caplog.at_level("INFO"):
        code = main(["transcribe", str(SPEECH), str(broken), "--engine", "local", "--chunk-seconds", "2"])
    assert code == 1
    captured = capsys.readouterr()
    lines = captured.out.split("\n")
    assert "engineer" in lines[0].lower()
    assert lines[1] == ""
    assert f"{broken}: " in captured.err
    assert "resumed" not in captured.err + caplog.text


async def test_db_migrate_on_postgres(
    pg_dsn: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With DATABASE_URL set, `db migrate` applies the supabase/migrations files to Postgres, once."""
    import asyncio

    monkeypatch.setenv("DATABASE_URL", pg_dsn)
    assert await asyncio.to_thread(main, ["db", "migrate"]) == 0
    applied = json.loads(capsys.readouterr().out)["applied"]
    assert any(name.endswith("_core.sql") for name in applied)
    assert await asyncio.to_thread(main, ["db", "migrate"]) == 0
    assert json.loads(capsys.readouterr().out) == {"applied": []}


def test_tenant_key_is_stored_only_as_a_hash(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The API key printed once is not in the database; only its SHA-256 is, in a WAL-mode SQLite file."""
    import hashlib
    import sqlite3

    assert main(["tenant", "create", "acme", "--data-dir", str(tmp_path)]) == 0
    api_key = json.loads(capsys.readouterr().out)["api_key"]
    database = tmp_path / "bridge.sqlite3"
    raw = b"".join(path.read_bytes() for path in tmp_path.glob("bridge.sqlite3*"))
    assert api_key.encode() not in raw
    with sqlite3.connect(database) as conn:
        (stored,) = conn.execute("SELECT api_key_hash FROM tenants").fetchone()
        (mode,) = conn.execute("PRAGMA journal_mode").fetchone()
    assert stored == hashlib.sha256(api_key.encode()).hexdigest()
    assert mode == "wal"


def fake_install(folder: Path) -> Path:
    """An `interview-bridge` executable in `folder`, as pip's console script would be."""
    folder.mkdir(parents=True)
    executable = folder / "interview-bridge"
    executable.write_text("#!/bin/sh\n", encoding="utf-8")
    executable.chmod(0o755)
    return executable


def test_serve_names_the_demo_page_and_the_key_command_of_the_readme_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings]
) -> None:
    """Run from `.venv/bin/` below the current directory, `serve` tells how to create a key with that prefix and
    the same data dir, and sends a browser to 127.0.0.1 when it listens on every address."""
    monkeypatch.setattr(sys, "argv", [str(fake_install(tmp_path / ".venv" / "bin")), "serve"])
    monkeypatch.chdir(tmp_path)
    lines = start_up_lines(make_settings(host="0.0.0.0", port=9000, data_dir=Path("my data")))
    assert "demo page: http://127.0.0.1:9000/" in lines
    assert "get a tenant key: .venv/bin/interview-bridge tenant create NAME --data-dir 'my data'" in lines


def test_serve_key_command_is_the_bare_name_on_path_else_the_full_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_settings: Callable[..., Settings]
) -> None:
    """Installed outside the current directory, the key command is `interview-bridge` when PATH finds this very
    executable and its full path when it does not; a Postgres store needs no `--data-dir`."""
    executable = fake_install(tmp_path / "elsewhere" / "bin")
    monkeypatch.setattr(sys, "argv", [str(executable), "serve"])
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("PATH", f"{executable.parent}:/usr/bin:/bin")
    settings = make_settings(store="postgres", database_url="postgresql://127.0.0.1/nothing")
    assert "get a tenant key: interview-bridge tenant create NAME" in start_up_lines(settings)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert f"get a tenant key: {executable} tenant create NAME" in start_up_lines(settings)
