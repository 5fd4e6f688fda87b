"""What every response carries and what every tenant is held to: security headers, a request id, an active
session ceiling (issue 20, Build 5). The slow-body cut and the logs of a whole run are in tests/test_hygiene_run.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable
from typing import Any

import pytest

from bridge.app import create_app
from bridge.logs import JsonFormatter, request_id
from shared.settings import Settings
from tests.helpers import bearer, new_session, new_tenant
from tests.isolation.world import in_process

SECURITY_HEADERS = ("x-content-type-options", "referrer-policy", "content-security-policy")


async def test_every_response_carries_the_security_headers(app_client: Callable[..., Any]) -> None:
    """The page, the API, an error and an unknown path all answer with nosniff, no-referrer and a CSP."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        responses = {
            "page": await client.get("/"),
            "health": await client.get("/health"),
            "created": await client.post("/sessions", json={}, headers=bearer(key)),
            "unauthorized": await client.get("/sessions"),
            "unknown path": await client.get("/no/such/thing"),
            "bad method": await client.put("/sessions"),
        }
    assert [r.status_code for r in responses.values()] == [200, 200, 201, 401, 404, 405]
    for name, response in responses.items():
        assert response.headers["x-content-type-options"] == "nosniff", name
        assert response.headers["referrer-policy"] == "no-referrer", name
        policy = response.headers["content-security-policy"]
        assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy, name
        assert "'unsafe-inline'" not in policy and "'unsafe-eval'" not in policy, name


async def test_the_policy_lets_the_page_reach_a_configured_supabase_project(app_client: Callable[..., Any]) -> None:
    """With SUPABASE_URL set, the page may connect to that project over https and wss, and nowhere else."""
    async with app_client(
        supabase_url="https://abc.supabase.co", supabase_anon_key="anon", store="sqlite", broadcaster="local"
    ) as client:
        policy = (await client.get("/")).headers["content-security-policy"]
    connect = next(part for part in policy.split("; ") if part.startswith("connect-src"))
    assert connect.split()[1:] == ["'self'", "https://abc.supabase.co", "wss://abc.supabase.co"]


async def test_every_response_carries_a_request_id_and_a_sane_given_one_is_kept(
    app_client: Callable[..., Any],
) -> None:
    """Each response has its own X-Request-Id; a caller's well-formed id comes back, a malformed one is replaced."""
    async with app_client() as client:
        first = (await client.get("/health")).headers["x-request-id"]
        second = (await client.get("/no/such/thing")).headers["x-request-id"]
        kept = (await client.get("/health", headers={"X-Request-Id": "edge-42.abc"})).headers["x-request-id"]
        replaced = (await client.get("/health", headers={"X-Request-Id": "bad id\twith spaces"})).headers[
            "x-request-id"
        ]
    assert re.fullmatch(r"[0-9a-f]{32}", first) and re.fullmatch(r"[0-9a-f]{32}", second) and first != second
    assert kept == "edge-42.abc"
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)


async def test_each_request_writes_one_access_line_with_its_id_and_no_credential(
    app_client: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    """The access line names method, path, status and the response's request id, with query credentials masked."""
    caplog.set_level(logging.INFO, logger="bridge.access")
    async with app_client() as client:
        _, key = await new_tenant(client)
        session_id, token = await new_session(client, key)
        response = await client.get(f"/sessions/{session_id}/transcript?token={token}&format=text")
    lines = [
        r for r in caplog.records if r.name == "bridge.access" and r.__dict__.get("path", "").endswith("/transcript")
    ]
    assert len(lines) == 1
    line = json.loads(JsonFormatter().format(lines[0]))
    assert line["method"] == "GET" and line["status"] == response.status_code
    assert line["query"] == "token=REDACTED&format=text"
    assert token not in caplog.text and key not in caplog.text


def test_a_log_line_is_json_with_the_request_id_and_credentials_masked() -> None:
    """Any logger's record becomes one JSON object carrying the current request id, with keys and tokens masked."""
    record = logging.makeLogRecord(
        {"name": "bridge", "levelname": "WARNING", "msg": "retrying %s", "args": ("GET /x?apikey=ibk_secretsecret",)}
    )
    reset = request_id.set("req-1")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id.reset(reset)
    assert line["request_id"] == "req-1" and line["level"] == "warning" and line["logger"] == "bridge"
    assert line["message"] == "retrying GET /x?apikey=REDACTED"
    unmasked = logging.makeLogRecord({"msg": "Authorization: Bearer ibk_abcdefghijkl and ibk_mnopqrstuvwx"})
    assert "ibk_" not in JsonFormatter().format(unmasked)


async def test_a_tenant_at_its_active_session_ceiling_gets_429_until_one_ends(app_client: Callable[..., Any]) -> None:
    """With MAX_ACTIVE_SESSIONS=2 a third session is 429 with Retry-After; ending one, or another tenant, goes on."""
    async with app_client(max_active_sessions=2) as client:
        _, key = await new_tenant(client, "acme")
        _, other = await new_tenant(client, "globex")
        first, _ = await new_session(client, key)
        await new_session(client, key)
        refused = await client.post("/sessions", json={}, headers=bearer(key))
        assert refused.status_code == 429
        assert refused.json()["error"] == "rate_limited" and "MAX_ACTIVE_SESSIONS" in refused.json()["detail"]
        assert int(refused.headers["retry-after"]) > 0
        listed = (await client.get("/sessions", headers=bearer(key))).json()
        assert len(listed["sessions"]) == 2  # the refusal stored nothing
        assert (await client.post("/sessions", json={}, headers=bearer(other))).status_code == 201
        assert (await client.post(f"/sessions/{first}/end", headers=bearer(key))).status_code == 200
        assert (await client.post("/sessions", json={}, headers=bearer(key))).status_code == 201


async def test_without_a_ceiling_a_tenant_opens_as_many_sessions_as_it_likes(app_client: Callable[..., Any]) -> None:
    """MAX_ACTIVE_SESSIONS unset means no limit: many active sessions of one tenant are all created."""
    async with app_client() as client:
        _, key = await new_tenant(client)
        statuses = [(await client.post("/sessions", json={}, headers=bearer(key))).status_code for _ in range(5)]
    assert statuses == [201] * 5


async def test_parallel_creates_never_overshoot_the_active_session_ceiling(
    make_settings: Callable[..., Settings], pg_dsn: str
) -> None:
    """Eight sessions asked for at once by a tenant with MAX_ACTIVE_SESSIONS=2 on Postgres: exactly two are made."""
    settings = make_settings(store="postgres", database_url=pg_dsn, max_active_sessions=2, stt_engine="simulate")
    async with in_process(create_app(settings)) as client:
        _, key = await new_tenant(client)
        answers = await asyncio.gather(*(client.post("/sessions", json={}, headers=bearer(key)) for _ in range(8)))
        listed = (await client.get("/sessions", headers=bearer(key))).json()["sessions"]
    assert sorted(a.status_code for a in answers) == [201, 201] + [429] * 6
    assert len(listed) == 2
