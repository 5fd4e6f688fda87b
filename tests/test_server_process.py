"""The bridge as a user runs it: the README's run command, a real server process, a real crash."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import httpx

from bridge.offline import wav_bytes
from tests.helpers import FIXTURES, load_pcm

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def readme_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"```(?:bash|sh|console)?\n(.*?)```", text, flags=re.S)


def wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            response = httpx.get(f"{url}/health", timeout=2)
            if response.status_code == 200:
                body: dict[str, Any] = response.json()
                return body
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError("the server never answered /health")


@contextmanager
def server(cmd: list[str], env: dict[str, str], stderr: IO[bytes] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """`cmd` in a process group of its own, stopped with SIGTERM (SIGKILL after 30 s); its stderr into `stderr`."""
    process = subprocess.Popen(cmd, env=env, cwd=REPO, start_new_session=True, stderr=stderr)
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def base_env(data_dir: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SUPABASE_URL", "OPENAI_API_KEY")}
    env.update({"DATA_DIR": str(data_dir), "PORT": str(port), "HOST": "127.0.0.1"})
    env.update(extra)
    return env


def test_readme_run_command_serves_health(tmp_path: Path) -> None:
    """The README's first command block starts the bridge on embedded defaults and /health answers."""
    blocks = readme_blocks()
    assert len(blocks) >= 2, "the README must open with the run and test command blocks"
    run_command = blocks[0].strip()
    assert "interview-bridge serve" in run_command
    port = free_port()
    with server(["bash", "-c", run_command], base_env(tmp_path / "data", port)) as process:
        health = wait_healthy(f"http://127.0.0.1:{port}", process)
    assert health["status"] == "ok"
    assert health["store"] == "sqlite"
    assert health["broadcaster"] == "local"
    assert health["engine"] == "local"


def test_readme_test_command_is_what_ci_runs() -> None:
    """The README's second command block is the test script, and .ci/run calls that same script."""
    test_command = readme_blocks()[1].strip()
    assert test_command == "bash scripts/test.sh"
    assert "bash scripts/test.sh" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_chunk_acknowledged_before_a_kill_is_transcribed_after_restart(tmp_path: Path) -> None:
    """A chunk acknowledged by a server killed with SIGKILL mid-transcription is transcribed by the next server."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    data_dir = tmp_path / "data"
    tenant = subprocess.run(
        [str(BIN / "interview-bridge"), "tenant", "create", "acme", "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
    )
    api_key = json.loads(tenant.stdout)["api_key"]
    audio = base64.b64encode(wav_bytes(load_pcm(FIXTURES / "live" / "two_sentences.flac"))).decode()
    slow = base_env(data_dir, port, STT_ENGINE="simulate", SIMULATE_LATENCY_MS="600000")
    with server([str(BIN / "interview-bridge"), "serve"], slow) as process:
        wait_healthy(url, process)
        created = httpx.post(f"{url}/sessions", json={}, headers={"Authorization": f"Bearer {api_key}"}).json()
        session_id, token = created["session"]["id"], created["token"]
        body = {
            "session_id": session_id,
            "speaker": "candidate",
            "sequence_number": 0,
            "audio_chunk": audio,
            "mime_type": "audio/wav",
        }
        answer = httpx.post(
            f"{url}/functions/v1/process-audio", json=body, headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        assert answer.status_code == 200
        assert answer.json()["status"] == "accepted"
        assert answer.json()["entries"] == []
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    fast = base_env(data_dir, port, STT_ENGINE="simulate")
    with server([str(BIN / "interview-bridge"), "serve"], fast) as process:
        wait_healthy(url, process)
        entries: list[dict[str, Any]] = []
        for _ in range(200):  # the killed server's lease on the stream runs out first (15 s)
            transcript = httpx.get(
                f"{url}/sessions/{session_id}/transcript", headers={"Authorization": f"Bearer {token}"}
            )
            entries = transcript.json()["entries"]
            if entries:
                break
            time.sleep(0.2)
    assert entries, "the restarted server should transcribe the acknowledged chunk without being asked"
    assert all(e["engine"] == "simulate" for e in entries)
