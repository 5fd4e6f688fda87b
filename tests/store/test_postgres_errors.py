"""Postgres driver and network failures come out of the store as StoreUnavailable, with no password in them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared.errors import StoreConflict, StoreUnavailable
from shared.models import Session, SessionStatus
from shared.store.postgres import PostgresStore
from tests import pg


async def test_unreachable_server_is_store_unavailable_without_password() -> None:
    """Starting against a port where nothing listens raises StoreUnavailable naming the host but not the password."""
    store = PostgresStore(f"postgresql://bridge:s3cret-pw@127.0.0.1:{pg.free_port()}/db")
    with pytest.raises(StoreUnavailable, match="cannot connect to Postgres") as caught:
        await store.start()
    assert "s3cret-pw" not in caught.value.detail and "127.0.0.1" in caught.value.detail


async def test_calls_before_start_are_store_unavailable() -> None:
    """Using the store before start() is StoreUnavailable, not an AttributeError."""
    store = PostgresStore("postgresql://bridge@127.0.0.1:5432/db")
    with pytest.raises(StoreUnavailable, match="call start"):
        await store.get_tenant("t")


async def test_sql_errors_are_wrapped(pg_dsn: str) -> None:
    """A write the database rejects as conflicting (a session for an unknown tenant) surfaces as StoreConflict with its cause."""
    store = PostgresStore(pg_dsn)
    await store.start()
    try:
        at = datetime(2026, 1, 1, tzinfo=UTC)
        with pytest.raises(StoreConflict, match="ForeignKeyViolation") as caught:
            await store.create_session(
                Session(id="s", tenant_id="nobody", status=SessionStatus.ACTIVE, created_at=at, last_activity_at=at)
            )
        assert caught.value.__cause__ is not None
    finally:
        await store.close()
