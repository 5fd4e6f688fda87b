"""`serve --workers N`: several server processes on one store, refused where they would split the realtime hub."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import httpx

from bench.supabase_stand_in import SupabaseStandIn
from bridge.offline import wav_bytes
from tests.helpers import FIXTURES, load_pcm
from tests.test_server_process import BIN, base_env, free_port, server, wait_healthy


def worker_processes(pid: int) -> int:
    """Children of `pid` that uvicorn's supervisor spawned to serve (multiprocessing's helpers are not counted)."""
    count = 0
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (proc / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid and b"spawn_main" in command:
            count += 1
    return count


def test_several_workers_with_the_in_process_hub_are_refused(tmp_path: Path) -> None:
    """`serve --workers 2` on the in-process hub exits 2 and says to use Supabase Realtime, serving nothing."""
    env = base_env(tmp_path / "data", free_port(), STT_ENGINE="simulate")
    done = subprocess.run(
        [str(BIN / "interview-bridge"), "serve", "--workers", "2"], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "Supabase Realtime" in done.stderr and "WORKERS=2" in done.stderr


def test_two_workers_share_one_store_and_broadcast_through_supabase(tmp_path: Path) -> None:
    """Two worker processes on one SQLite file answer every chunk, transcribe both speakers and broadcast every line."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    speech = base64.b64encode(wav_bytes(load_pcm(FIXTURES / "live" / "two_sentences.flac"))).decode()
    with SupabaseStandIn(service_key="service-role") as supabase:
        env = base_env(
            data_dir, port, STT_ENGINE="simulate", STORE="sqlite", BROADCASTER="supabase",
            SUPABASE_URL=supabase.url, SUPABASE_SERVICE_ROLE_KEY="service-role",
        )  # fmt: skip
        with server([str(BIN / "interview-bridge"), "serve", "--workers", "2"], env) as process:
            wait_healthy(url, process)
            assert worker_processes(process.pid) == 2
            tenant = subprocess.run(
                [str(BIN / "interview-bridge"), "tenant", "create", "acme", "--data-dir", str(data_dir)],
                env=env, check=True, capture_output=True, text=True,
            )  # fmt: skip
            key = {"Authorization": f"Bearer {json.loads(tenant.stdout)['api_key']}"}
            created = httpx.post(f"{url}/sessions", json={"speakers": ["a", "b"]}, headers=key).json()
            session_id, auth = created["session"]["id"], {"Authorization": f"Bearer {created['token']}"}
            for speaker in ("a", "b"):
                for sequence in range(3):  # fresh connections: the kernel spreads them over both workers
                    body = {"session_id": session_id, "speaker": speaker, "sequence_number": sequence,
                            "audio_chunk": speech, "mime_type": "audio/wav"}  # fmt: skip
                    answer = httpx.post(f"{url}/functions/v1/process-audio", json=body, headers=auth, timeout=30)
                    assert answer.status_code == 200, answer.text
            ended = httpx.post(f"{url}/sessions/{session_id}/end", headers=auth, timeout=60)
            assert ended.status_code == 200
            entries = httpx.get(f"{url}/sessions/{session_id}/transcript", headers=auth).json()["entries"]
    assert {e["speaker"] for e in entries} == {"a", "b"}
    lines = [message for _, message in supabase.messages("transcript_entry")]
    assert sorted(m["payload"]["id"] for m in lines) == sorted(e["id"] for e in entries)
