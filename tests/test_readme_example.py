"""A newcomer's first minutes: what `serve` prints, and the README's "Send audio" commands run as written."""

from __future__ import annotations

import re
import shlex
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.test_server_process import BIN, REPO, base_env, free_port, server, wait_healthy

README = (REPO / "README.md").read_text(encoding="utf-8")
CLOCK = r"\d\d:\d\d:\d\d\.\d{3} --> \d\d:\d\d:\d\d\.\d{3}"


def readme_section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else len(README)]


def send_audio_script(url: str) -> str:
    """The section's bash blocks as one script, aimed at this test's server instead of the default address."""
    script = "\n".join(re.findall(r"```bash\n(.*?)```", readme_section("Send audio"), flags=re.S))
    assert "BRIDGE=http://127.0.0.1:8080\n" in script
    return script.replace("http://127.0.0.1:8080", url)


@contextmanager
def serving(tmp_path: Path, engine: str) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """`interview-bridge serve` run from the repository root; yields its URL, the file of its stderr, its env."""
    port = free_port()
    env = base_env(tmp_path / "data", port)
    log = tmp_path / "serve.log"
    cmd = ["bash", "-c", f'exec "$0" serve --engine {engine} 2>{shlex.quote(str(log))}', str(BIN / "interview-bridge")]
    with server(cmd, env) as process:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, process)
        yield url, log, env


@pytest.mark.parametrize("engine", ["local", "simulate"])
def test_readme_send_audio_commands_print_the_transcript_as_text_and_vtt(tmp_path: Path, engine: str) -> None:
    """The README's "Send audio" commands, pasted into bash beside a running bridge, print each chunk's answer and
    then the transcript as `speaker: text` lines and as WebVTT cues; with the local engine, what the README shows."""
    with serving(tmp_path, engine) as (url, _, env):
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", send_audio_script(url)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[:2] == ["0 accepted", "1 accepted"]
    text_line, vtt = lines[2], lines[3:]
    assert text_line.startswith("candidate: [simulated " if engine == "simulate" else "candidate: ")
    assert vtt[:2] == ["WEBVTT", ""]
    assert re.fullmatch(CLOCK, vtt[2])
    assert vtt[3:] == [f"<v candidate>{text_line.removeprefix('candidate: ')}"]
    if engine == "local":
        shown = re.findall(r"```text\n(.*?)```", readme_section("Send audio"), flags=re.S)[0].splitlines()
        assert re.fullmatch(CLOCK, shown[5])
        assert lines[:5] + lines[6:] == shown[:5] + shown[6:]


def test_serve_prints_the_demo_page_the_schema_and_a_working_key_command(tmp_path: Path) -> None:
    """`serve` from the README's install prints the demo page's and the API schema's URLs, which answer, and a
    `.venv/bin/interview-bridge tenant create` command that, pasted into bash, creates a tenant key."""
    with serving(tmp_path, "simulate") as (url, log, env):
        printed = log.read_text(encoding="utf-8")
        assert f"demo page: {url}/\n" in printed
        assert f"API schema: {url}/schema  (JSON: {url}/schema/openapi.json)\n" in printed
        page = httpx.get(f"{url}/", timeout=10)
        schema_page = httpx.get(f"{url}/schema", timeout=10)
        schema = httpx.get(f"{url}/schema/openapi.json", timeout=10)
        command = re.search(r"^get a tenant key: (.*)$", printed, flags=re.M)
        assert command is not None, printed
        assert command[1] == f".venv/bin/interview-bridge tenant create NAME --data-dir {tmp_path / 'data'}"
        created = subprocess.run(
            ["bash", "-c", command[1].replace("NAME", "acme")],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert schema_page.status_code == 200 and schema_page.headers["content-type"].startswith("text/html")
    assert {"/sessions", "/sessions/{session_id}/transcript", "/functions/v1/process-audio"} <= set(
        schema.json()["paths"]
    )
    assert "`GET /schema/openapi.json`" in readme_section("HTTP API")
    assert created.stdout.startswith('{"tenant_id": ')
    assert '"api_key": "ibk_' in created.stdout
