"""A server killed mid-stream: the `interview-bridge stream` command reconnects to the restarted server and
resumes at next_sequence; nothing acknowledged is lost, nothing is stored or transcribed twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx

from shared.stt.wer import word_errors
from tests.helpers import FIXTURES
from tests.test_server_process import BIN, base_env, free_port, server, wait_healthy

SPEECH = FIXTURES / "live" / "two_sentences.flac"
REFERENCE = (FIXTURES / "live" / "two_sentences.txt").read_text(encoding="utf-8").strip()
FRAMES = 44  # 10.9 s in 250 ms frames


def test_a_stream_survives_a_server_killed_mid_stream(tmp_path: Path) -> None:
    """SIGKILL at 4 s into a real-time stream, a restart on the same port: the client resumes, every frame is
    stored exactly once, and the transcript has the words of the whole recording, each line once."""
    port, data_dir = free_port(), tmp_path / "data"
    url = f"http://127.0.0.1:{port}"
    env = base_env(data_dir, port)
    serve_command = [str(BIN / "interview-bridge"), "serve", "--engine", "local"]
    create = [str(BIN / "interview-bridge"), "tenant", "create", "acme", "--data-dir", str(data_dir)]
    key = json.loads(subprocess.run(create, check=True, capture_output=True, text=True).stdout)["api_key"]
    with server(serve_command, env) as first:
        wait_healthy(url, first)
        created = httpx.post(f"{url}/sessions", json={}, headers={"Authorization": f"Bearer {key}"}).json()
        session_id, token = created["session"]["id"], created["token"]
        stream = subprocess.Popen(
            [str(BIN / "interview-bridge"), "stream", str(SPEECH), "--session", session_id, "--speaker", "candidate",
             "--token", token, "--url", url],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(4.0)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    with server(serve_command, env) as second:
        wait_healthy(url, second)
        _, err = stream.communicate(timeout=120)
        headers = {"Authorization": f"Bearer {token}"}
        session = httpx.get(f"{url}/sessions/{session_id}", headers=headers).json()
        entries = httpx.get(f"{url}/sessions/{session_id}/transcript", headers=headers).json()["entries"]
    assert stream.returncode == 0, err[-2000:]
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["frames"] == FRAMES and summary["reconnects"] >= 1
    assert summary["acked"] <= FRAMES  # a frame stored while its ack was lost in the crash is not sent again
    assert session["next_sequence"] == {"candidate": FRAMES} and session["failed_sequences"] in ({}, {"candidate": []})
    assert len({entry["first_sequence"] for entry in entries}) == len(entries)
    text = " ".join(entry["text"] for entry in entries)
    errors, words = word_errors(REFERENCE, text)
    print(f"after a crash mid-stream: {errors}/{words} word errors, {summary}")
    assert errors <= 2, text
