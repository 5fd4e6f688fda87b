"""A store call on Postgres costs one query on the wire: a released connection goes back to the pool as it is."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from shared.errors import StoreConflict
from shared.models import InsertOutcome
from shared.store.postgres import PostgresStore
from tests.store.test_conformance import chunk, make_session, make_tenant


async def test_a_store_call_is_one_query_and_a_failed_one_leaves_the_connection_usable(pg_dsn: str) -> None:
    """With one pooled connection, inserting chunks sends one query each and no reset query on release; after a
    write that Postgres refused, the same connection serves the next call."""
    store = PostgresStore(pg_dsn, min_size=1, max_size=1)
    await store.start()
    try:
        session = await make_session(store, await make_tenant(store))
        queries: list[str] = []

        def log_query(record: Any) -> None:
            queries.append(record.query)

        assert store._pool is not None
        async with store._pool.acquire() as conn:  # the pool's only connection
            conn.add_query_logger(log_query)
        for seq in range(3):
            assert await store.insert_chunk(chunk(session, seq)) is InsertOutcome.INSERTED
        assert len(queries) == 3 and all("insert_audio_chunk" in query for query in queries), queries

        with pytest.raises(StoreConflict):
            await store.insert_chunk(chunk(replace(session, id="no-such-session"), 0))
        assert await store.insert_chunk(chunk(session, 3)) is InsertOutcome.INSERTED
        assert [c.sequence_number for c in await store.list_chunks(session.id, "candidate")] == [0, 1, 2, 3]
    finally:
        await store.close()
