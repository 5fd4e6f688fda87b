"""The demo page in a real headless Chromium whose fake microphone plays committed speech, against a real `serve`.

Debian's chromium is driven by playwright-core from npm (tests/e2e/interview.mjs); both are installed by the
test script, and a missing one fails these tests. The bridge runs the bundled local model, so the words on the
page are the model's, and the page's transcript is scored against the fixture's text beside the transcript of
the same file taken whole (`interview-bridge transcribe --chunk-seconds 0`).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from bridge.offline import wav_bytes
from shared.stt.wer import word_errors
from tests.helpers import FIXTURES, load_pcm
from tests.test_server_process import BIN, REPO, base_env, free_port, server, wait_healthy

SPEECH = FIXTURES / "live" / "two_sentences.flac"
REFERENCE = (FIXTURES / "live" / "two_sentences.txt").read_text(encoding="utf-8").strip()
CHROMIUM = Path("/usr/bin/chromium")
SCRIPT = Path(__file__).with_name("interview.mjs")
RECORD_S = 14  # the speech ends at 11.4 s; the file's silent tail covers the stop
RELOAD_RECORD_S = 21  # the file starts again at the reload (6 s) plus the page's load: its speech ends by ~19 s
LEAD_S, TAIL_S = 0.5, 10.0


@dataclass(frozen=True)
class Bridge:
    url: str
    data_dir: Path
    microphone: Path  # the WAV the fake microphone plays
    whole_text: str  # the file transcribed whole


@pytest.fixture(scope="module")
def bridge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bridge]:
    """A loopback `serve` with the local model, and the fixture as the microphone plays it (speech, then silence)."""
    assert CHROMIUM.exists(), "Debian's chromium is missing: the test script installs it"
    assert shutil.which("node"), "node is missing: the test script installs it"
    assert (REPO / "node_modules/playwright-core/package.json").exists(), "playwright-core is missing: run npm ci"
    root = tmp_path_factory.mktemp("browser")
    pcm = load_pcm(SPEECH)
    lead, tail = np.zeros(int(16_000 * LEAD_S), np.float32), np.zeros(int(16_000 * TAIL_S), np.float32)
    microphone = root / "speech.wav"
    microphone.write_bytes(wav_bytes(np.concatenate([lead, pcm, tail])))
    whole = subprocess.run(
        [str(BIN / "interview-bridge"), "transcribe", str(microphone), "--chunk-seconds", "0", "--engine", "local"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    port, data_dir = free_port(), root / "data"
    command = [str(BIN / "interview-bridge"), "serve", "--engine", "local"]
    with server(command, base_env(data_dir, port)) as process:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            if wait_healthy(url, process)["ready"]:
                break
        yield Bridge(url, data_dir, microphone, whole)


def drive(bridge: Bridge, *options: str, seconds: int = RECORD_S) -> dict[str, Any]:
    """Run the page once in Chromium, recording for `seconds`; what it showed, as JSON."""
    command = ["node", str(SCRIPT), f"--url={bridge.url}", f"--audio={bridge.microphone}", f"--seconds={seconds}"]
    finished = subprocess.run([*command, *options], cwd=REPO, capture_output=True, text=True, timeout=240)
    assert finished.stdout.strip(), finished.stderr[-2000:]
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    assert "error" not in result, f"{result['error']}\nstatus: {result.get('status_at_error')}\n{result['log']}"
    return result


def stored_sequences(bridge: Bridge, session_id: str) -> dict[str, list[tuple[int, str]]]:
    """(sequence, state) of every stored chunk, per speaker, straight from the embedded store."""
    with sqlite3.connect(bridge.data_dir / "bridge.sqlite3") as conn:
        rows = conn.execute(
            "SELECT speaker, sequence_number, state FROM audio_chunks WHERE session_id = ? ORDER BY 1, 2", (session_id,)
        ).fetchall()
    out: dict[str, list[tuple[int, str]]] = {}
    for speaker, sequence, state in rows:
        out.setdefault(speaker, []).append((sequence, state))
    return out


def score(bridge: Bridge, finals: list[str], label: str) -> tuple[int, int]:
    """Word errors of the page and of the whole file against the fixture's text, printed for the record."""
    page_errors, words = word_errors(REFERENCE, " ".join(finals))
    whole_errors, _ = word_errors(REFERENCE, bridge.whole_text)
    print(f"{label}: page WER {page_errors}/{words} = {page_errors / words:.1%}, "
          f"whole file {whole_errors}/{words} = {whole_errors / words:.1%}")  # fmt: skip
    return page_errors, whole_errors


def assert_nothing_lost(bridge: Bridge, result: dict[str, Any], seconds: int = RECORD_S) -> None:
    """Every sequence from 0 up is stored once and processed; no entry shows twice."""
    stored = stored_sequences(bridge, result["session_id"])
    assert list(stored) == ["candidate"]
    sequences = [sequence for sequence, _ in stored["candidate"]]
    assert sequences == list(range(len(sequences))) and len(sequences) >= seconds // 2 - 2
    assert {state for _, state in stored["candidate"]} == {"done"}
    assert len(set(result["final_ids"])) == len(result["final_ids"])  # (the same words may be said twice: the
    # fake microphone starts its file again after a reload)


@pytest.mark.parametrize("mode", ["stream", "media-recorder", "wav"])
def test_spoken_words_appear_as_final_lines_for_the_speaker_and_a_viewer_through_a_network_drop(
    bridge: Bridge, mode: str
) -> None:
    """Opening / on a loopback bridge and pressing #record alone (no key, no other button) puts the microphone's
    words under #transcript [data-final], a viewer tab shows the same lines, and a 4 s network drop loses none;
    the page's Content-Security-Policy blocks nothing it uses."""
    export = {"stream": "text", "media-recorder": "vtt", "wav": "srt"}[mode]
    result = drive(bridge, f"--mode={mode}", "--record-only=1", "--viewer=1", "--drop-at=3", "--drop-for=4",
                   f"--export={export}")  # fmt: skip
    assert result["mode"] == mode
    assert result["csp_violations"] == []
    assert result["retries"] > 0  # the drop really failed sends (or, streaming, cut the socket)
    assert result["failed_requests"] > 0 or mode == "stream"
    assert "Network trouble" in result["status_during_drop"]
    assert result["viewer_recorder_hidden"] is True
    assert result["viewer_finals"] == result["finals"]
    assert set(result["speakers"]) == {"candidate"}
    text = " ".join(result["finals"]).lower()
    for word in ("engineer", "door", "outside", "poison", "cried"):
        assert word in text, text
    assert_nothing_lost(bridge, result)
    assert (result["level_during_speech"], result["level_state"]) == ("ok", "silent")  # the meter follows the mic
    assert result["export_name"].endswith(".txt" if export == "text" else f".{export}")
    assert result["export_text"].startswith({"vtt": "WEBVTT", "srt": "1\n", "text": "candidate: "}[export])
    assert all(line in result["export_text"] for line in result["finals"])
    page_errors, whole_errors = score(bridge, result["finals"], mode)
    assert page_errors <= max(1.2 * whole_errors, whole_errors + 1)  # one word of slack on a 21-word file


@pytest.mark.parametrize("mode", ["stream", "media-recorder", "wav"])
def test_a_reload_mid_interview_resumes_at_the_next_sequence(bridge: Bridge, mode: str) -> None:
    """After a reload the page shows the interview again and, on #record, goes on at the bridge's next_sequence:
    no sequence is missing or repeated, and the words spoken after the reload arrive."""
    # Chromium's fake microphone starts its file again for the reloaded page: the whole speech plays after it.
    result = drive(bridge, f"--mode={mode}", "--reload-at=6", seconds=RELOAD_RECORD_S)
    assert "from chunk" in result["resumed_status"]
    resumed_at = int(result["resumed_status"].rsplit("from chunk ", 1)[1].rstrip("."))
    assert resumed_at >= 1
    assert_nothing_lost(bridge, result, RELOAD_RECORD_S)
    text = " ".join(result["finals"]).lower()
    assert "poison" in text and "cried" in text, text
    score(bridge, result["finals"], f"{mode} with a reload")


def test_the_running_server_serves_the_page_its_client_and_a_working_demo_tenant(bridge: Bridge) -> None:
    """On a real loopback `serve`, `/` and `/interview-client.js` answer and the demo tenant's key starts a
    session (tests/api/test_demo_page.py shows there is no demo tenant beyond loopback)."""
    page = httpx.get(f"{bridge.url}/")
    assert page.status_code == 200 and 'id="record"' in page.text and 'data-demo-tenant="on"' in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]  # the policy the page ran under
    client = httpx.get(f"{bridge.url}/interview-client.js")
    assert client.headers["content-type"].startswith("text/javascript")
    assert "export class InterviewClient" in client.text
    key = httpx.post(f"{bridge.url}/demo/tenant").json()["api_key"]
    created = httpx.post(f"{bridge.url}/sessions", json={}, headers={"Authorization": f"Bearer {key}"})
    assert created.status_code == 201
