"""The REST face of the local hub: POST /realtime/v1/api/broadcast (batch) and .../{topic}/events/{event}."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from .conftest import Server

AUTH = {"apikey": "tok-a", "Authorization": "Bearer tok-a"}


@pytest.fixture
async def http(server: Server) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.realtime_url) as client:
        yield client


def batch(*messages: dict[str, Any]) -> dict[str, Any]:
    return {"messages": list(messages)}


async def test_batch_is_202_empty_and_delivered_in_order(server: Server, http: httpx.AsyncClient) -> None:
    """A valid batch answers 202 with an empty body and reaches subscribers in the order given."""
    with server.hub.subscribe("session:a") as sub:
        response = await http.post(
            "/api/broadcast",
            headers=AUTH,
            json=batch(
                {"topic": "session:a", "event": "one", "payload": {"i": 1}},
                {"topic": "session:a", "event": "two", "payload": {"i": 2}, "private": False},
            ),
        )
        assert (response.status_code, response.content) == (202, b"")
        assert await sub.get(within_s=2) == ("one", {"i": 1})
        assert await sub.get(within_s=2) == ("two", {"i": 2})


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({"apikey": "tok-a"}, id="apikey-header"),
        pytest.param({"Authorization": "Bearer tok-a"}, id="bearer-only"),
    ],
)
async def test_either_credential_header_is_enough(
    server: Server, http: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    """The credential may come as the apikey header or as Authorization: Bearer."""
    response = await http.post(
        "/api/broadcast", headers=headers, json=batch({"topic": "session:a", "event": "x", "payload": {}})
    )
    assert response.status_code == 202


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param({"apikey": "nope"}, id="unknown-key"),
        pytest.param({"Authorization": "Basic tok-a"}, id="not-bearer"),
    ],
)
async def test_without_valid_credential_is_401(http: httpx.AsyncClient, headers: dict[str, str]) -> None:
    """No credential, an unknown key or a non-Bearer Authorization is 401 unauthorized."""
    response = await http.post(
        "/api/broadcast", headers=headers, json=batch({"topic": "session:a", "event": "x", "payload": {}})
    )
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"{}", id="no-messages"),
        pytest.param(b'{"messages": [{"topic": "session:a", "event": "x", "payload": [1]}]}', id="payload-not-object"),
        pytest.param(b'{"messages": [{"topic": "", "event": "x", "payload": {}}]}', id="empty-topic"),
        pytest.param(b'{"messages": [{"event": "x", "payload": {}}]}', id="no-topic"),
    ],
)
async def test_invalid_body_is_422(http: httpx.AsyncClient, body: bytes) -> None:
    """A body that is not {"messages": [{topic, event, payload: {}}]} is 422 invalid_broadcast."""
    response = await http.post("/api/broadcast", headers=AUTH, content=body)
    assert response.status_code == 422
    assert response.json()["error"] == "invalid_broadcast"


async def test_reserved_event_or_foreign_topic_is_403_and_nothing_delivered(
    server: Server, http: httpx.AsyncClient
) -> None:
    """A batch holding a reserved event or another session's topic is 403 forbidden, and none of it is delivered."""
    with server.hub.subscribe("session:a") as sub_a, server.hub.subscribe("session:b") as sub_b:
        for bad in (
            {"topic": "session:a", "event": "transcript_entry", "payload": {"text": "forged"}},
            {"topic": "session:b", "event": "note", "payload": {}},
        ):
            response = await http.post(
                "/api/broadcast", headers=AUTH, json=batch({"topic": "session:a", "event": "ok", "payload": {}}, bad)
            )
            assert response.status_code == 403
            assert response.json()["error"] == "forbidden"
        with pytest.raises(TimeoutError):
            await sub_a.get(within_s=0.2)
        with pytest.raises(TimeoutError):
            await sub_b.get(within_s=0.05)


async def test_single_event_endpoint(server: Server, http: httpx.AsyncClient) -> None:
    """POST /api/broadcast/{urlencoded topic}/events/{event} with a raw JSON object body is 202 and delivered."""
    with server.hub.subscribe("session:a") as sub:
        response = await http.post(
            "/api/broadcast/session%3Aa/events/cursor", params={"private": "true"}, headers=AUTH, json={"x": 1}
        )
        assert (response.status_code, response.content) == (202, b"")
        assert await sub.get(within_s=2) == ("cursor", {"x": 1})


async def test_single_event_endpoint_refusals(http: httpx.AsyncClient) -> None:
    """The single-event endpoint answers 401 without a credential, 422 for a non-object body, 403 for a reserved event."""
    assert (await http.post("/api/broadcast/session%3Aa/events/x", json={})).status_code == 401
    assert (await http.post("/api/broadcast/session%3Aa/events/x", headers=AUTH, json=[1])).status_code == 422
    reserved = await http.post(
        "/api/broadcast/session%3Aa/events/session_status", headers=AUTH, json={"status": "ended"}
    )
    assert reserved.status_code == 403
