"""Supabase Realtime's broadcast endpoint, as its docs show it, for runs where the bridge broadcasts through
Supabase (several workers): `POST /realtime/v1/api/broadcast` with the service key in `apikey` answers 202, any
other request 401. Each message is kept with the monotonic time it arrived, the point where Supabase would fan
it out (its own fan-out is not part of what is measured or tested)."""

from __future__ import annotations

import http.server
import json
import threading
import time
from typing import Any

ENDPOINT = "/realtime/v1/api/broadcast"


class SupabaseStandIn:
    """A threaded HTTP server on 127.0.0.1; `url` is what SUPABASE_URL should be."""

    def __init__(self, service_key: str) -> None:
        self.received: list[tuple[float, dict[str, Any]]] = []
        stand_in = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                at = time.monotonic()
                if self.path == ENDPOINT and self.headers.get("apikey") == service_key:
                    stand_in.received.extend((at, message) for message in json.loads(body).get("messages", []))
                    self.send_response(202)
                else:
                    self.send_response(401)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def messages(self, event: str) -> list[tuple[float, dict[str, Any]]]:
        """(arrival, message) of every received message of one event, in arrival order."""
        return [(at, message) for at, message in self.received if message.get("event") == event]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> SupabaseStandIn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
