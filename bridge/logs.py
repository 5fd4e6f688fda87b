"""Structured logs: one JSON object per line on stderr, each carrying the request id it was written under.

Log lines are read by machines (Fly's log shipper, `jq`) and by people hunting one request; a request id that the
response also carries (`X-Request-Id`) ties the two together. Credentials are masked here, for every logger, so
no code path can print one by accident.
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

from bridge.realtime.redact import redact_text as redact

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# LogRecord's own attributes: whatever else a record has came from `extra=` and goes into the JSON object
_STANDARD: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "request_id"?, ...extra}`, credentials masked."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        current = request_id.get()
        if current is not None:
            line["request_id"] = current
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = redact(value) if isinstance(value, str) else value
        if record.exc_info:
            line["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(line, default=str, ensure_ascii=False)


def install_json_logging(level: int = logging.INFO) -> None:
    """Send every logger's records to stderr as JSON lines (called once per process, before anything logs: by the
    CLI, and by `create_app` in a worker process that uvicorn spawned with no logging set up)."""
    # what a JSON line does not carry is not looked up for every record (the caller's frame, thread, process)
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in ("faster_whisper", "httpx", "openai"):  # one INFO line per engine or HTTP call is noise
        logging.getLogger(chatty).setLevel(logging.WARNING)
