"""How log lines leave the process: JSON objects, masked, written in order by a thread of their own so the event
loop never waits on stderr (issue 20: hygiene must cost no throughput)."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from bridge.log_writer import BatchedLineHandler
from bridge.logs import JsonFormatter


class ThreadRecordingStream(io.StringIO):
    """A stream that remembers which thread made each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: list[str] = []

    def write(self, text: str) -> int:
        self.writers.append(threading.current_thread().name)
        return super().write(text)


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, ThreadRecordingStream, BatchedLineHandler]]:
    stream = ThreadRecordingStream()
    handler = BatchedLineHandler(stream, interval=0.05)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.log_lines")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        yield logger, stream, handler
    finally:
        logger.handlers.clear()
        handler.close()


def lines_of(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def wait_for(condition: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # type: ignore[operator]
        time.sleep(0.01)


def test_info_lines_are_written_in_order_by_the_writer_thread_never_by_the_caller(
    logged: tuple[logging.Logger, ThreadRecordingStream, BatchedLineHandler],
) -> None:
    """A thousand INFO lines reach the stream complete and in order, every write made by the log-writer thread."""
    logger, stream, _ = logged
    for n in range(1000):
        logger.info("line %d", n)
    wait_for(lambda: stream.getvalue().count("\n") == 1000)
    assert [line["message"] for line in lines_of(stream)] == [f"line {n}" for n in range(1000)]
    assert set(stream.writers) == {"log-writer"}


def test_a_warning_is_written_at_once_with_the_lines_before_it(
    logged: tuple[logging.Logger, ThreadRecordingStream, BatchedLineHandler],
) -> None:
    """A WARNING does not wait for the next batch: it and every earlier line are on the stream when the call returns."""
    logger, stream, handler = logged
    handler.interval = 60.0  # the writer thread would not come round again within this test
    time.sleep(0.1)
    logger.info("before")
    logger.warning("the store is unavailable")
    assert [line["message"] for line in lines_of(stream)] == ["before", "the store is unavailable"]


def test_closing_the_handler_writes_what_is_pending(
    logged: tuple[logging.Logger, ThreadRecordingStream, BatchedLineHandler],
) -> None:
    """Lines still queued at exit (logging.shutdown closes the handlers) are written, none lost."""
    logger, stream, handler = logged
    handler.interval = 60.0
    time.sleep(0.1)
    for n in range(50):
        logger.info("pending %d", n)
    handler.close()
    assert len(lines_of(stream)) == 50


def test_a_line_carries_its_time_to_the_millisecond_in_utc() -> None:
    """`ts` is the record's own time as ISO 8601 UTC with milliseconds, whatever the process's time zone."""
    record = logging.makeLogRecord({"name": "bridge", "msg": "hello"})
    record.created = datetime(2026, 12, 4, 21, 39, 8, 959_400, tzinfo=UTC).timestamp()
    line = json.loads(JsonFormatter().format(record))
    assert line["ts"] == "2026-12-04T21:39:08.959Z"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])


@pytest.mark.parametrize(
    ("message", "secret"),
    [
        ('token=abc123secret\\"tail', "abc123secret"),
        ("BEARER AbCdEf123456", "AbCdEf123456"),
        ('{"apikey": "k3y-v4lue"}', "k3y-v4lue"),
        ("Password: hunter2hunter2", "hunter2hunter2"),
    ],
)
def test_masking_a_line_keeps_it_valid_json(message: str, secret: str) -> None:
    """A credential is masked whatever its case and the quotes and backslashes around it, and the line still parses."""
    record = logging.makeLogRecord({"name": "bridge", "msg": message, "detail": message})
    text = JsonFormatter().format(record)
    line = json.loads(text)
    assert secret not in text and "REDACTED" in line["message"] and "REDACTED" in line["detail"]  # type: ignore[operator]


def test_a_line_without_credentials_is_left_as_it_was() -> None:
    """The opposite case: text that merely resembles a credential's surroundings is not altered."""
    message = "tokens counted: 12; secretary=no; path=/functions/v1/process-audio"
    record = logging.makeLogRecord({"name": "bridge", "msg": message})
    assert json.loads(JsonFormatter().format(record))["message"] == message
