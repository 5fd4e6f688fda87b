"""SIGTERM, as Fly sends it before stopping a machine, to a real server under load: nothing answered is lost."""

from __future__ import annotations

import asyncio
import base64
import json
import subprocess
import threading
import time
from pathlib import Path

import httpx

from shared.store.sqlite import SQLiteStore
from shared.stt.wavio import wav_bytes
from tests.helpers import FIXTURES, load_pcm, wav_chunks
from tests.test_server_process import BIN, base_env, free_port, server, wait_healthy

SESSIONS = 8
KILL_TIMEOUT_S = 60  # fly.toml's


def post_until_refused(url: str, auth: dict[str, str], session_id: str, speaker: str, chunks: list[str],
                       acked: list[tuple[str, str, int]], stop: threading.Event) -> None:  # fmt: skip
    """Post a speaker's chunks in order, as fast as answers come, until the server stops answering."""
    with httpx.Client(timeout=30) as client:
        for sequence in range(10_000):
            if stop.is_set():
                return
            body = {"session_id": session_id, "speaker": speaker, "sequence_number": sequence,
                    "audio_chunk": chunks[sequence % len(chunks)], "mime_type": "audio/wav"}  # fmt: skip
            try:
                answer = client.post(f"{url}/functions/v1/process-audio", json=body, headers=auth)
            except httpx.HTTPError:
                return
            if answer.status_code != 200:
                return
            acked.append((session_id, speaker, sequence))


def stored_chunks(data_dir: Path) -> set[tuple[str, str, int]]:
    async def read() -> set[tuple[str, str, int]]:
        store = SQLiteStore(data_dir / "bridge.sqlite3")
        await store.start()
        try:
            rows = store.conn.execute("SELECT session_id, speaker, sequence_number FROM audio_chunks")
            return {(row[0], row[1], row[2]) for row in rows}
        finally:
            await store.close()

    return asyncio.run(read())


def test_sigterm_under_load_keeps_every_answered_chunk_and_exits_0_in_time(tmp_path: Path) -> None:
    """16 speakers posting at full speed; SIGTERM: the server exits 0 well within kill_timeout, and every chunk
    that got a 200 is in the store."""
    port, data_dir = free_port(), tmp_path / "data"
    url = f"http://127.0.0.1:{port}"
    env = base_env(data_dir, port, STT_ENGINE="simulate", SIMULATE_LATENCY_MS="200", RATE_LIMITS="off")
    speech = [base64.b64encode(c).decode() for c in wav_chunks(load_pcm(FIXTURES / "live" / "two_sentences.flac"))]
    silence = base64.b64encode(wav_bytes(load_pcm(FIXTURES / "audio" / "silence_2s.wav"))).decode()
    acked: list[tuple[str, str, int]] = []
    stop = threading.Event()
    with server([str(BIN / "interview-bridge"), "serve"], env) as process:
        wait_healthy(url, process)
        tenant = subprocess.run(
            [str(BIN / "interview-bridge"), "tenant", "create", "acme", "--data-dir", str(data_dir)],
            env=env, check=True, capture_output=True, text=True,
        )  # fmt: skip
        key = {"Authorization": f"Bearer {json.loads(tenant.stdout)['api_key']}"}
        posters = []
        for _ in range(SESSIONS):
            created = httpx.post(f"{url}/sessions", json={"speakers": ["a", "b"]}, headers=key).json()
            auth = {"Authorization": f"Bearer {created['token']}"}
            for speaker in ("a", "b"):
                poster = threading.Thread(
                    target=post_until_refused,
                    args=(url, auth, created["session"]["id"], speaker, [*speech, silence], acked, stop),
                )
                poster.start()
                posters.append(poster)
        time.sleep(2.0)
        answered_before = len(acked)
        process.send_signal(15)
        signalled = time.monotonic()
        exit_code = process.wait(timeout=KILL_TIMEOUT_S)
        took = time.monotonic() - signalled
        stop.set()
        for poster in posters:
            poster.join(timeout=30)
    assert answered_before > 50  # the load was real
    assert exit_code == 0
    assert took < KILL_TIMEOUT_S / 2
    missing = set(acked) - stored_chunks(data_dir)
    assert not missing, f"{len(missing)} answered chunks are not stored"
