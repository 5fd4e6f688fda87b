"""The Fly Machines client at the HTTP boundary (respx), with the shapes and errors Fly's docs show."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
import respx

from shared.fly_machines import BASE_URL, FlyApiError, FlyMachines

APP = "ib-tenant-acme"
MACHINE = {
    "id": "3d8d9014b32dd8",
    "name": "session-s1",
    "state": "created",
    "region": "ams",
    "instance_id": "01H3JK",
    "private_ip": "fdaa:0:18:a7b:196:e274:9ce1:2",
    "config": {"image": "registry.fly.io/interview-bridge:v1", "metadata": {"session_id": "s1"}},
}


@pytest.fixture
async def fly() -> AsyncIterator[tuple[FlyMachines, list[float]]]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    client = FlyMachines("fly-token", sleep=sleep)
    yield client, slept
    await client.aclose()


@respx.mock
async def test_create_machine_sends_the_documented_config(fly: tuple[FlyMachines, list[float]]) -> None:
    """One POST with the token, image, guest, auto_destroy, no restarts and the session in the metadata."""
    client, _ = fly
    route = respx.post(f"{BASE_URL}/apps/{APP}/machines").mock(return_value=httpx.Response(200, json=MACHINE))
    machine = await client.create_machine(
        APP, name="session-s1", image="registry.fly.io/interview-bridge:v1", session_id="s1", region="ams"
    )
    assert (machine.id, machine.metadata, machine.private_ip) == (
        MACHINE["id"],
        {"session_id": "s1"},
        MACHINE["private_ip"],
    )
    request = route.calls.last.request
    assert request.headers["authorization"] == "Bearer fly-token"
    body = json.loads(request.content)
    assert body["name"] == "session-s1" and body["region"] == "ams"
    config = body["config"]
    assert config["auto_destroy"] is True and config["restart"] == {"policy": "no"}
    assert config["metadata"] == {"session_id": "s1"}
    assert config["guest"]["memory_mb"] % 256 == 0


@respx.mock
async def test_a_create_that_timed_out_returns_the_machine_it_made(fly: tuple[FlyMachines, list[float]]) -> None:
    """408 on create is ambiguous: the machine found under its unique name is returned, not made twice."""
    client, _ = fly
    create = respx.post(f"{BASE_URL}/apps/{APP}/machines").mock(
        return_value=httpx.Response(408, json={"error": "timeout"})
    )
    respx.get(f"{BASE_URL}/apps/{APP}/machines").mock(return_value=httpx.Response(200, json=[MACHINE]))
    machine = await client.create_machine(APP, name="session-s1", image="img", session_id="s1")
    assert machine.id == MACHINE["id"]
    assert create.call_count == 1


@respx.mock
async def test_a_taken_name_of_another_machine_is_an_error(fly: tuple[FlyMachines, list[float]]) -> None:
    """422 name_taken with no machine of that name to be found: FlyApiError saying so."""
    client, _ = fly
    respx.post(f"{BASE_URL}/apps/{APP}/machines").mock(
        return_value=httpx.Response(422, json={"error": "name already taken", "status": "name_taken"})
    )
    respx.get(f"{BASE_URL}/apps/{APP}/machines").mock(return_value=httpx.Response(200, json=[]))
    with pytest.raises(FlyApiError) as raised:
        await client.create_machine(APP, name="session-s9", image="img", session_id="s9")
    assert (raised.value.http_status, raised.value.kind) == (422, "name_taken")


@respx.mock
async def test_rate_limits_and_server_errors_are_retried_honouring_retry_after(
    fly: tuple[FlyMachines, list[float]],
) -> None:
    """429 with Retry-After: 3, then 503, then 200: the list arrives; the waits were 3 s and then 2 s."""
    client, slept = fly
    respx.get(f"{BASE_URL}/apps/{APP}/machines").mock(
        side_effect=[
            httpx.Response(429, headers={"retry-after": "3"}, json={"error": "rate limited"}),
            httpx.Response(503, json={"error": "unavailable"}),
            httpx.Response(200, json=[MACHINE]),
        ]
    )
    machines = await client.list_machines(APP, session_id="s1")
    assert [m.id for m in machines] == [MACHINE["id"]]
    assert slept == [3.0, 2.0]
    assert respx.calls.last.request.url.params["metadata.session_id"] == "s1"


@respx.mock
async def test_insufficient_capacity_is_not_retried(fly: tuple[FlyMachines, list[float]]) -> None:
    """Fly's insufficient_capacity comes back as FlyApiError with its kind, after one request."""
    client, slept = fly
    route = respx.post(f"{BASE_URL}/apps/{APP}/machines").mock(
        return_value=httpx.Response(412, json={"error": "no capacity in ams", "status": "insufficient_capacity"})
    )
    with pytest.raises(FlyApiError) as raised:
        await client.create_machine(APP, name="session-s1", image="img", session_id="s1", region="ams")
    assert raised.value.kind == "insufficient_capacity"
    assert route.call_count == 1 and slept == []


@respx.mock
async def test_wait_stop_destroy_and_create_app(fly: tuple[FlyMachines, list[float]]) -> None:
    """wait: 200 started, 408 not yet; stop posts; destroy forces and takes 404 as gone; a taken app name is False."""
    client, _ = fly
    base = f"{BASE_URL}/apps/{APP}/machines/{MACHINE['id']}"
    respx.get(f"{base}/wait").mock(side_effect=[httpx.Response(200, json={"ok": True}), httpx.Response(408, json={})])
    stop = respx.post(f"{base}/stop").mock(return_value=httpx.Response(200, json={"ok": True}))
    destroy = respx.delete(base).mock(
        side_effect=[httpx.Response(200, json={"ok": True}), httpx.Response(404, json={})]
    )
    apps = respx.post(f"{BASE_URL}/apps").mock(
        side_effect=[httpx.Response(201, json={}), httpx.Response(422, json={"error": "taken"})]
    )
    assert await client.wait(APP, MACHINE["id"]) is True
    assert await client.wait(APP, MACHINE["id"], timeout_s=5) is False
    await client.stop(APP, MACHINE["id"])
    await client.destroy(APP, MACHINE["id"])
    await client.destroy(APP, MACHINE["id"])  # already gone
    assert destroy.calls.last.request.url.params["force"] == "true"
    assert stop.call_count == 1
    assert await client.create_app(APP, "acme-org", "ib-net-acme") is True
    assert await client.create_app(APP, "acme-org", "ib-net-acme") is False
    assert json.loads(apps.calls[0].request.content) == {
        "app_name": APP,
        "org_slug": "acme-org",
        "network": "ib-net-acme",
    }


def test_without_a_token_the_client_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """No FLY_API_TOKEN and none given: a clear error instead of anonymous requests."""
    monkeypatch.delenv("FLY_API_TOKEN", raising=False)
    with pytest.raises(FlyApiError, match="FLY_API_TOKEN"):
        FlyMachines()
