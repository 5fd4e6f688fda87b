"""Structured logs: one JSON object per line on stderr, each carrying the request id it was written under.

Log lines are read by machines (Fly's log shipper, `jq`) and by people hunting one request; a request id that the
response also carries (`X-Request-Id`) ties the two together. Credentials are masked here, for every logger, so
no code path can print one by accident.
"""

from __future__ import annotations

import functools
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from bridge.log_writer import BatchedLineHandler
from bridge.realtime.redact import may_hold_secret
from bridge.realtime.redact import redact_text as redact

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# LogRecord's own attributes: whatever else a record has came from `extra=` and goes into the JSON object
_STANDARD: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    """`{"ts", "level", "logger", "message", "request_id"?, ...extra}`, credentials masked.

    It runs on the event loop for every request's access line, so it is kept lean: the record's extra fields are
    found by one set difference, the object is encoded by msgspec, and the masking regex runs only on lines that
    hold one of its trigger words (its matches never cross a quote or a backslash, so masking the encoded line
    keeps it valid JSON)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        current = request_id.get()
        if current is not None:
            line["request_id"] = current
        fields = vars(record)
        for key in fields.keys() - _STANDARD:
            if not key.startswith("_"):
                line[key] = fields[key]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        text = _encode(line).decode()
        if not may_hold_secret(text):  # nearly every line: one cheap scan, no regex
            return text
        for key, value in line.items():  # each string as it is, then the encoded line (nested values, keys)
            if isinstance(value, str):
                line[key] = redact(value)
        return redact(_encode(line).decode())


@functools.lru_cache(maxsize=4)
def _up_to_the_second(whole: int) -> str:
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _timestamp(created: float) -> str:
    """`2026-12-04T21:39:08.959Z`, the part up to the second made once per second."""
    whole = int(created)
    return f"{_up_to_the_second(whole)}.{int((created - whole) * 1000):03d}Z"


_encode = msgspec.json.Encoder(enc_hook=str).encode  # what JSON cannot carry is written as its str()


def install_json_logging(level: int = logging.INFO) -> None:
    """Send every logger's records to stderr as JSON lines (called once per process, before anything logs: by the
    CLI, and by `create_app` in a worker process that uvicorn spawned with no logging set up)."""
    # what a JSON line does not carry is not looked up for every record (the caller's frame, thread, process)
    logging._srcfile = None
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    handler = BatchedLineHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for chatty in ("faster_whisper", "httpx", "openai"):  # one INFO line per engine or HTTP call is noise
        logging.getLogger(chatty).setLevel(logging.WARNING)
