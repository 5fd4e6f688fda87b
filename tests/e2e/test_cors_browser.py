"""The CORS allow-list as a browser enforces it: a real Chromium on a listed origin and on an unlisted one calls the
bridge's API with fetch (tests/e2e/cors.mjs), as a platform's web app would."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.test_server_process import BIN, REPO, base_env, free_port, server, wait_healthy

SCRIPT = Path(__file__).with_name("cors.mjs")


class EmptyPage(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<!doctype html><title>platform</title>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@contextmanager
def web_app_origin() -> Iterator[str]:
    """A page on an origin of its own: a platform's web app, as far as the browser can tell."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EmptyPage)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_only_a_listed_origin_can_call_the_api_from_a_browser(tmp_path: Path) -> None:
    """A page on a CORS_ORIGINS origin creates a session and reads its X-Request-Id; a page on another origin is
    refused by the browser at the preflight, and nothing is created for it."""
    with web_app_origin() as listed, web_app_origin() as unlisted:
        port, data_dir = free_port(), tmp_path / "data"
        env = base_env(data_dir, port, STT_ENGINE="simulate", CORS_ORIGINS=listed)
        create = [str(BIN / "interview-bridge"), "tenant", "create", "acme", "--data-dir", str(data_dir)]
        key = json.loads(subprocess.run(create, check=True, capture_output=True, text=True, env=env).stdout)["api_key"]
        bridge = f"http://127.0.0.1:{port}"
        with server([str(BIN / "interview-bridge"), "serve"], env) as process:
            wait_healthy(bridge, process)
            command = ["node", str(SCRIPT), f"--bridge={bridge}", f"--key={key}", f"--origins={listed},{unlisted}"]
            finished = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
            assert finished.stdout.strip(), finished.stderr[-2000:]
            seen = json.loads(finished.stdout.strip().splitlines()[-1])
            sessions = httpx.get(f"{bridge}/sessions", headers={"Authorization": f"Bearer {key}"}).json()["sessions"]
    assert seen[listed]["status"] == 201 and len(seen[listed]["request_id"]) == 32
    assert "error" in seen[unlisted] and "Failed to fetch" in seen[unlisted]["error"]
    assert len(sessions) == 1
