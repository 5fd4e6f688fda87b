"""Moves SQLite's WAL checkpoints off the event loop.

A commit in WAL mode appends to the log without syncing (`synchronous=NORMAL`), so it is cheap; but by default the
commit that takes the log past 1,000 pages (4 MB, about 60 WAV chunks) also copies the log into the database and
syncs both, on the event loop. Measured under load (400 interviews, 25 MB/s of audio) those commits were the
largest single cost of the request path, and every request behind them waited. Here a thread with its own
connection checkpoints every `interval_s` (PASSIVE: never blocks a writer); the main connection keeps an automatic
checkpoint only as a backstop, far above what the thread lets the log reach.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

log = logging.getLogger(__name__)

BACKSTOP_PAGES = 16_384  # the main connection's own checkpoint, in case this thread falls far behind (64 MB)
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # after a checkpoint resets the log, its file is truncated to this


class WalCheckpointer:
    """A daemon thread that checkpoints one database file's WAL at a fixed interval until stopped."""

    def __init__(self, path: Path, interval_s: float = 1.0) -> None:
        self.path = path
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="sqlite-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def _loop(self) -> None:
        conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            while not self._stop.wait(self.interval_s):
                self._checkpoint(conn)
        finally:
            conn.close()

    @staticmethod
    def _checkpoint(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # a busy or vanished file: the next tick (or the backstop) catches up
            log.warning("SQLite checkpoint failed: %s", exc)
