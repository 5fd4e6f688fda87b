"""What the fuzzers share: an embedded bridge behind a synchronous client, and tenants made in its store."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from bridge.app import create_app
from shared.credentials import hash_api_key, new_api_key
from shared.models import Tenant, utcnow
from shared.settings import Settings
from tests.helpers import bearer
from tests.isolation.world import SERVICE_KEY, USER_JWT_SECRET

SESSION_TOKEN_SECRET = "session-secret-for-tests-0123456789abcdef"
Client = TestClient[Litestar]


def fuzz_settings(data_dir: Path, **overrides: Any) -> Settings:
    """An embedded bridge (SQLite, local hub, simulated engine) whatever the environment says; `overrides` win."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "store": "sqlite",
        "broadcaster": "local",
        "stt_engine": "simulate",
        "service_key": SERVICE_KEY,
        "session_token_secret": SESSION_TOKEN_SECRET,
        "supabase_jwt_secret": USER_JWT_SECRET,
        "rate_limits": "off",  # the fuzzers send thousands of requests a minute; limits have tests of their own
    }
    values.update(overrides)
    with pytest.MonkeyPatch.context() as env:
        for name in Settings.model_fields:
            env.delenv(name.upper(), raising=False)
        return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@contextmanager
def running(settings: Settings) -> Iterator[Client]:
    """The bridge running (lifespan included) behind a synchronous client, so hypothesis drives it from plain
    test functions; 5xx answers come back as responses, not exceptions."""
    app: Litestar = create_app(settings)
    with TestClient(app=app, raise_server_exceptions=False) as client:
        yield client


def add_tenant(client: Client, name: str) -> tuple[str, str]:
    """(tenant_id, api_key) of a tenant made the way `tenant create` does, in the running bridge's store."""
    api_key = new_api_key()
    tenant = Tenant(id=str(uuid.uuid4()), name=name, created_at=utcnow())
    client.blocking_portal.call(client.app.state.services.store.create_tenant, tenant, hash_api_key(api_key))
    return tenant.id, api_key


def new_session(client: Client, api_key: str, **body: Any) -> tuple[str, str]:
    """(session_id, session token) of a new session."""
    created = client.post("/sessions", json=body, headers=bearer(api_key))
    assert created.status_code == 201, created.text
    return created.json()["session"]["id"], created.json()["token"]
