"""A log handler that never makes the event loop wait for a write: lines are queued in memory and written to the
stream in batches by a thread of its own.

Why: a write to stderr is a system call, and the thread that makes it gives up the GIL, then waits to take it back
from the audio threads for up to their switch interval. Written inline by the event loop, one access line per
request cost 15-20% of chunks/s at max pace (docs/benchmarks.md). Batched, the loop only appends to a deque.

What is kept: lines reach the stream in order, within `interval` seconds; a record at WARNING or above is written
at once with everything before it, and so is everything at `flush()`/`close()`, which `logging.shutdown` calls at
exit. Only a process killed outright can lose the last `interval` seconds of lines.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import TextIO


class BatchedLineHandler(logging.Handler):
    def __init__(self, stream: TextIO, interval: float = 0.1) -> None:
        super().__init__()
        self.stream = stream
        self.interval = interval
        self._pending: deque[str] = deque()  # append and popleft are atomic: no lock on the logging side
        self._write_lock = threading.Lock()  # one writer at a time keeps the batches in order
        self._stop = threading.Event()
        self._writer = threading.Thread(target=self._write_periodically, name="log-writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # logging must never raise into the code that logs
            self.handleError(record)
            return
        self._pending.append(line + "\n")
        if record.levelno >= logging.WARNING:
            self.flush()

    def flush(self) -> None:
        with self._write_lock:
            pending = self._pending
            lines = [pending.popleft() for _ in range(len(pending))]
            if not lines:
                return
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):  # stderr closed or gone: nowhere left to say so
                pass

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()

    def _write_periodically(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()
