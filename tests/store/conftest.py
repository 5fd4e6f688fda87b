"""The `store` fixture: every conformance test runs once per backend."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.store.base import Store
from shared.store.sqlite import SQLiteStore

BACKENDS = [pytest.param("sqlite", id="sqlite")]


@pytest.fixture(params=BACKENDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh, migrated store of each kind."""
    backend: Store
    if request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "bridge.sqlite3")
    else:  # pragma: no cover - later backends register here
        raise AssertionError(request.param)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.close()
