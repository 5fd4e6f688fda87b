"""Per-interview machines on a simulated Fly Machines API: start, route with fly-replay, destroy, orphans."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from typing import Any

import httpx
import pytest
import respx

from bridge.app import create_app
from shared.broadcast.local import LocalHub
from shared.errors import ConfigurationError, StoreUnavailable
from shared.fly_machines import FlyMachines
from shared.interview_machines import InterviewMachines
from shared.settings import Settings
from tests.fly_sim import FakeFly
from tests.helpers import FIXTURES, bearer, chunk_body, load_pcm, new_tenant, services, wav_chunks
from tests.isolation.world import in_process

SHARED_APP = "ib-shared"
IMAGE = "registry.fly.io/ib-shared:deployment-01"
SERVICE_KEY = "service-key-for-tests-0123456789abcdef"
Client = httpx.AsyncClient


def tenant_app(tenant_id: str) -> str:
    return f"{SHARED_APP}-t-" + hashlib.sha256(tenant_id.encode()).hexdigest()[:16]


@pytest.fixture
def machine_settings(make_settings: Callable[..., Settings], pg_dsn: str) -> Callable[..., Settings]:
    """The shared app's settings on Fly: Postgres, Supabase Realtime, per-interview machines on."""

    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "store": "postgres",
            "database_url": pg_dsn,
            "broadcaster": "supabase",
            "supabase_url": "https://project-ref.supabase.co",
            "supabase_service_role_key": "service-role-key",
            "per_interview_machines": "on",
            "fly_api_token": "fly-token-never-forwarded",
            "fly_image": IMAGE,
            "fly_app_name": SHARED_APP,
            "fly_machine_id": "shared0machine",
            "service_key": SERVICE_KEY,
        }
        values.update(overrides)
        return make_settings(**values)

    return build


@asynccontextmanager
async def fly_world(settings: Settings, fly: FakeFly) -> AsyncIterator[tuple[Client, Client]]:
    """The shared app, and an interview machine's app (the same image with the settings Fly gives it), both on
    one database; Realtime is an in-process hub here, the only part not reached over the network."""
    machine_settings = settings.model_copy(update={"per_interview_machines": "off", "fly_machine_id": None})
    with respx.mock(assert_all_called=False, assert_all_mocked=False) as router:
        fly.mount(router)
        async with AsyncExitStack() as stack:
            shared = await stack.enter_async_context(in_process(create_app(settings, broadcaster=LocalHub())))
            machine = await stack.enter_async_context(in_process(create_app(machine_settings, broadcaster=LocalHub())))
            yield shared, machine


async def start_session(client: Client, api_key: str, region: str | None = "ams") -> dict[str, Any]:
    headers = bearer(api_key) | ({"Fly-Region": region} if region else {})
    response = await client.post("/sessions", json={"speakers": ["candidate"]}, headers=headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def speech() -> bytes:
    return wav_chunks(load_pcm(FIXTURES / "live" / "two_sentences.flac"), 2.0)[0]


async def reap(client: Client) -> dict[str, int]:
    response = await client.post("/functions/v1/session-reaper", headers=bearer(SERVICE_KEY))
    assert response.status_code == 200, response.text
    summary: dict[str, int] = response.json()
    return summary


async def test_a_session_gets_a_machine_in_its_tenants_own_app(machine_settings: Callable[..., Settings]) -> None:
    """POST /sessions starts a machine in the tenant's app (made once, on its own network) in the request's
    region, records its id on the session, and hands it the store's settings but never the Fly token."""
    fly = FakeFly()
    async with fly_world(machine_settings(), fly) as (shared, _):
        tenant_id, key = await new_tenant(shared)
        other_id, other_key = await new_tenant(shared, "globex")
        first = await start_session(shared, key, "ams")
        second = await start_session(shared, key, "syd")
        await start_session(shared, other_key, None)

    app = tenant_app(tenant_id)
    assert set(fly.apps) == {app, tenant_app(other_id)} and fly.app_creates == 2
    assert fly.apps[app] == {"network": f"{app}-net", "org_slug": "personal"}
    assert fly.apps[app]["network"] != fly.apps[tenant_app(other_id)]["network"]
    machines = {m["config"]["metadata"]["session_id"]: m for m in fly.machines[app].values()}
    assert set(machines) == {first["session"]["id"], second["session"]["id"]}
    machine = machines[first["session"]["id"]]
    assert first["session"]["machine_id"] == machine["id"]
    assert (machine["region"], machines[second["session"]["id"]]["region"]) == ("ams", "syd")
    config = machine["config"]
    assert config["image"] == IMAGE and config["auto_destroy"] is True
    assert config["metadata"] == {"session_id": first["session"]["id"], "tenant_id": tenant_id}
    assert config["services"][0]["internal_port"] == 8080
    env = config["env"]
    assert env["DATABASE_URL"] == machine_settings().database_url
    assert env["PER_INTERVIEW_MACHINES"] == "off" and env["REAPER_INTERVAL"] == "0"
    assert "FLY_API_TOKEN" not in env and "fly-token-never-forwarded" not in str(config)
    assert "SERVICE_KEY" not in env and SERVICE_KEY not in str(config)  # no operator routes on the machine


async def test_writes_are_replayed_on_the_sessions_machine(machine_settings: Callable[..., Settings]) -> None:
    """The shared app answers a chunk for a session with a machine with fly-replay and stores nothing; the
    machine takes the replayed chunk; a body over Fly's 1 MB replay limit is served where it lands."""
    fly = FakeFly()
    async with fly_world(machine_settings(), fly) as (shared, machine):
        tenant_id, key = await new_tenant(shared)
        created = await start_session(shared, key)
        session_id, token = created["session"]["id"], created["token"]
        body = chunk_body(session_id, "candidate", 0, speech())

        refused = await shared.post("/functions/v1/process-audio", json=body, headers=bearer(token))
        assert refused.status_code == 409 and refused.json()["error"] == "served_elsewhere"
        expected = f"instance={created['session']['machine_id']};app={tenant_app(tenant_id)}"
        assert refused.headers["fly-replay"] == expected
        assert await services(shared).store.next_sequences(session_id) == {}

        replayed = await machine.post("/functions/v1/process-audio", json=body, headers=bearer(token))
        assert replayed.status_code == 200 and replayed.json()["status"] == "accepted"

        big = chunk_body(session_id, "candidate", 1, speech())
        raw = (json.dumps(big) + " " * 1_100_000).encode()  # JSON allows the padding
        headers = bearer(token) | {"content-type": "application/json"}
        served = await shared.post("/functions/v1/process-audio", content=raw, headers=headers)
        assert served.status_code == 200, served.text
        assert "fly-replay" not in served.headers
        assert await services(shared).store.next_sequences(session_id) == {"candidate": 2}

        ended = await shared.post(f"/sessions/{session_id}/end", headers=bearer(token))
        assert ended.status_code == 409 and ended.headers["fly-replay"] == expected
        ended = await machine.post(f"/sessions/{session_id}/end", headers=bearer(token))
        assert ended.status_code == 200 and ended.json()["status"] == "ended"

        services(shared).sessions.forget(session_id)  # its 1 s cache of the active session lapses
        late = chunk_body(session_id, "candidate", 2, speech())
        after = await shared.post("/functions/v1/process-audio", json=late, headers=bearer(token))
        assert "fly-replay" not in after.headers  # a closed session needs no machine


async def test_the_reaper_destroys_closed_sessions_machines_and_orphans(
    machine_settings: Callable[..., Settings],
) -> None:
    """A pass destroys the machine of an ended session at once and an orphan left by a crash between create
    and record once it is older than the grace; the machine of a live session stays."""
    fly = FakeFly()
    async with fly_world(machine_settings(), fly) as (shared, machine):
        _, key = await new_tenant(shared)
        ending = await start_session(shared, key)
        live = await start_session(shared, key)
        ended = await machine.post(f"/sessions/{ending['session']['id']}/end", headers=bearer(ending["token"]))
        assert ended.status_code == 200

        store = services(shared).store
        real_create = store.create_session

        async def crash(_: Any) -> None:
            raise StoreUnavailable("the database went away")

        store.create_session = crash  # type: ignore[method-assign]
        lost = await shared.post("/sessions", json={}, headers=bearer(key))
        store.create_session = real_create  # type: ignore[method-assign]
        assert lost.status_code == 503
        assert len(fly.all_machines()) == 3

        assert (await reap(shared))["machines_destroyed"] == 1
        left = {m["id"] for m in fly.all_machines()}
        assert ending["session"]["machine_id"] not in left and live["session"]["machine_id"] in left
        assert len(left) == 2  # the orphan may still be a create in progress

        fly.backdate(timedelta(minutes=11))
        assert (await reap(shared))["machines_destroyed"] == 1
        assert [m["id"] for m in fly.all_machines()] == [live["session"]["machine_id"]]
        assert (await reap(shared))["machines_destroyed"] == 0


@pytest.mark.parametrize("trouble", ["refuse_machines", "never_starts"])
async def test_without_a_machine_the_shared_app_serves_the_session(
    machine_settings: Callable[..., Settings], trouble: str
) -> None:
    """When Fly has no capacity, or the machine never starts (then it is destroyed at once), the session is still
    created, with no machine, and its chunks are taken here."""
    fly = FakeFly(**{trouble: True})
    async with fly_world(machine_settings(), fly) as (shared, _):
        _, key = await new_tenant(shared)
        created = await start_session(shared, key)
        assert created["session"]["machine_id"] is None
        body = chunk_body(created["session"]["id"], "candidate", 0, speech())
        response = await shared.post("/functions/v1/process-audio", json=body, headers=bearer(created["token"]))
    assert response.status_code == 200 and response.json()["status"] == "accepted"
    assert fly.all_machines() == []


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"store": "sqlite", "database_url": None}, "not SQLite"),
        ({"broadcaster": "local"}, "Supabase Realtime"),
        ({"fly_api_token": None}, "FLY_API_TOKEN"),
        ({"fly_image": None}, "FLY_IMAGE"),
        ({"interview_machine_size": "huge"}, "INTERVIEW_MACHINE_SIZE"),
    ],
)
def test_per_interview_machines_refuse_settings_that_cannot_work(
    machine_settings: Callable[..., Settings], overrides: dict[str, Any], named: str
) -> None:
    """Start-up fails with the missing piece named: machines share the database and Supabase Realtime."""
    with pytest.raises(ConfigurationError, match=named):
        InterviewMachines(FlyMachines("token"), machine_settings(**overrides))
