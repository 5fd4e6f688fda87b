"""A real `serve` process held to its hygiene (issue 20, Build 5): a trickled body is cut off, and the logs of a
whole session (keys, tokens, audio, sockets, the reaper) are JSON lines that carry no secret and no audio."""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.helpers import FIXTURES, chunk_body, load_pcm, wav_chunks
from tests.test_server_process import BIN, base_env, free_port, server, wait_healthy

SERVICE_KEY = "svc-hygiene-4f7c2a9e81d3"


@contextmanager
def bridge(tmp_path: Path, **env: str) -> Iterator[tuple[str, str, Path]]:
    """A `serve` on the simulated engine with its stderr in a file: (url, tenant key, log file)."""
    port, data_dir, log = free_port(), tmp_path / "data", tmp_path / "serve.log"
    settings = base_env(data_dir, port, STT_ENGINE="simulate", SERVICE_KEY=SERVICE_KEY, **env)
    create = [str(BIN / "interview-bridge"), "tenant", "create", "acme", "--data-dir", str(data_dir)]
    key = json.loads(subprocess.run(create, check=True, capture_output=True, text=True, env=settings).stdout)["api_key"]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink, server([str(BIN / "interview-bridge"), "serve"], settings, stderr=sink) as process:
        wait_healthy(url, process)
        yield url, key, log


def new_session(url: str, key: str) -> tuple[str, str]:
    created = httpx.post(
        f"{url}/sessions", json={"speakers": ["candidate"]}, headers={"Authorization": f"Bearer {key}"}
    )
    assert created.status_code == 201, created.text
    return created.json()["session"]["id"], created.json()["token"]


def request_head(port_url: str, token: str, length: int) -> bytes:
    host = port_url.removeprefix("http://")
    return (
        f"POST /functions/v1/process-audio HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def read_response(sock: socket.socket, until: float) -> tuple[bytes, bool]:
    """What the server sent before `until`, and whether it then closed the connection."""
    received = b""
    while time.monotonic() < until:
        sock.settimeout(max(0.05, until - time.monotonic()))
        try:
            data = sock.recv(65536)
        except TimeoutError:
            return received, False
        except ConnectionResetError:
            return received, True
        if not data:
            return received, True
        received += data
    return received, False


def test_a_body_trickled_byte_by_byte_is_cut_off_and_stores_nothing(tmp_path: Path) -> None:
    """With BODY_TIMEOUT_S=2 a chunk trickled a byte every 0.1 s gets 408 and a closed connection, nothing is
    stored, the server answers others meanwhile, and a body sent in a few quick pieces is still taken."""
    chunk = wav_chunks(load_pcm(FIXTURES / "live" / "two_sentences.flac"))[0]
    with bridge(tmp_path, BODY_TIMEOUT_S="2") as (url, key, _):
        session_id, token = new_session(url, key)
        body = json.dumps(chunk_body(session_id, "candidate", 0, chunk)).encode()
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port)) as slow:
            slow.sendall(request_head(url, token, len(body)))
            started, sent = time.monotonic(), 0
            while time.monotonic() - started < 3.5 and sent < 40:
                try:
                    slow.sendall(body[sent : sent + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
                sent += 1
                time.sleep(0.1)
                if sent == 5:
                    assert httpx.get(f"{url}/health").status_code == 200  # one slow client holds nobody else up
            answer, closed = read_response(slow, time.monotonic() + 3)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert b'"error":"request_timeout"' in answer and closed
        assert time.monotonic() - started < 5.5
        headers = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/sessions/{session_id}", headers=headers).json()["next_sequence"] == {}
        with socket.create_connection(("127.0.0.1", port)) as quick:
            quick.sendall(request_head(url, token, len(body)))
            for start in range(0, len(body), len(body) // 4 + 1):
                quick.sendall(body[start : start + len(body) // 4 + 1])
                time.sleep(0.2)
            answer, _ = read_response(quick, time.monotonic() + 10)
        assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
        assert httpx.get(f"{url}/sessions/{session_id}", headers=headers).json()["next_sequence"] == {"candidate": 1}


def test_the_logs_of_a_whole_session_are_json_with_request_ids_and_no_secret_or_audio(tmp_path: Path) -> None:
    """Keys, tokens (in headers, queries and socket URLs), the service key and audio never reach the logs; every
    line is JSON, and the request id a response carries names its access line."""
    chunks = wav_chunks(load_pcm(FIXTURES / "live" / "two_sentences.flac"))[:3]
    with bridge(tmp_path) as (url, key, log):
        session_id, token = new_session(url, key)
        auth = {"Authorization": f"Bearer {token}"}
        posted = [httpx.post(f"{url}/functions/v1/process-audio", json=chunk_body(session_id, "candidate", i, c),
                             headers=auth) for i, c in enumerate(chunks)]  # fmt: skip
        assert [p.status_code for p in posted] == [200] * 3
        ws_url = url.replace("http", "ws")
        with connect(f"{ws_url}/realtime/v1/websocket?apikey={token}&vsn=1.0.0") as hub:
            hub.send(json.dumps({"topic": "phoenix", "event": "heartbeat", "payload": {}, "ref": "1"}))
            hub.recv(timeout=5)
        with connect(f"{ws_url}/functions/v1/stream?session_id={session_id}&speaker=candidate"
                     f"&mime_type=audio/pcm;rate=16000&token={token}") as stream:  # fmt: skip
            assert json.loads(stream.recv(timeout=5))["type"] == "ready"
        transcript = httpx.get(f"{url}/sessions/{session_id}/transcript?token={token}&format=text", headers=auth)
        assert transcript.status_code == 200
        refused = httpx.get(f"{url}/sessions?apikey={key}", headers={"Authorization": f"Bearer {key}x"})
        assert refused.status_code == 401
        assert httpx.post(f"{url}/sessions/{session_id}/end", headers={"Authorization": f"Bearer {key}"}).is_success
        reaped = httpx.post(f"{url}/functions/v1/session-reaper", headers={"Authorization": f"Bearer {SERVICE_KEY}"})
        assert reaped.status_code == 200
    text = log.read_text(encoding="utf-8")
    start_up, logged = [], []  # the start-up lines for whoever ran `serve`, then one JSON object per line
    for raw in text.splitlines():
        (logged if raw.startswith("{") else start_up).append(raw)
    assert start_up and not start_up[0].startswith("{") and len(start_up) <= 6, start_up
    assert text.splitlines()[: len(start_up)] == start_up
    lines = [json.loads(line) for line in logged]
    secrets = {"tenant key": key, "session token": token, "service key": SERVICE_KEY}
    secrets |= {f"token part {i}": part for i, part in enumerate(token.split(".")) if len(part) > 8}
    secret_file = tmp_path / "data" / "session_token_secret"
    if secret_file.exists():
        secrets["token secret"] = secret_file.read_text().strip()
    for name, value in secrets.items():
        assert value not in text, f"the {name} is in the logs"
    for i, chunk in enumerate(chunks):
        encoded = base64.b64encode(chunk).decode()
        for start in range(100, len(encoded) - 40, len(encoded) // 5):
            assert encoded[start : start + 40] not in text, f"chunk {i}'s audio is in the logs"
    access = [line for line in lines if line["logger"] == "bridge.access"]
    by_id = {line["request_id"]: line for line in access}
    for response in [*posted, transcript, refused, reaped]:
        line = by_id[response.headers["x-request-id"]]
        assert line["status"] == response.status_code and line["path"] == response.url.path
    transcript_line = by_id[transcript.headers["x-request-id"]]
    assert transcript_line["query"] == "token=REDACTED&format=text"
    assert by_id[refused.headers["x-request-id"]]["query"] == "apikey=REDACTED"
    assert any("websocket" in line["message"].lower() and "REDACTED" in line["message"] for line in lines)
