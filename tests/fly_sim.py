"""Fly's Machines API in memory, behind respx: apps, machines, wait and destroy with the documented shapes.

What the bridge cannot reach from here is replaced at the HTTP boundary only: the client under test is the real
`FlyMachines`, sending real requests that this simulator answers as Fly's docs say (422 for a taken name, a
machine's JSON with `id`, `state`, `region`, `config.metadata`, `created_at`, and `insufficient_capacity` errors).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import respx

from shared.fly_machines import BASE_URL


@dataclass
class FakeFly:
    """One Fly organisation: its apps and their machines."""

    org: str = "personal"
    apps: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {"network", "org_slug"}
    machines: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # app -> id -> machine
    app_creates: int = 0
    refuse_machines: bool = False  # answer creates with insufficient_capacity
    never_starts: bool = False  # machines are created but never reach `started` (wait answers 408)

    def mount(self, router: respx.MockRouter) -> None:
        router.post(f"{BASE_URL}/apps").mock(side_effect=self._create_app)
        router.get(f"{BASE_URL}/apps").mock(side_effect=self._list_apps)
        router.post(url__regex=rf"{BASE_URL}/apps/(?P<app>[^/]+)/machines$").mock(side_effect=self._create_machine)
        router.get(url__regex=rf"{BASE_URL}/apps/(?P<app>[^/]+)/machines(\?.*)?$").mock(side_effect=self._list)
        router.get(url__regex=rf"{BASE_URL}/apps/(?P<app>[^/]+)/machines/(?P<mid>[^/]+)/wait").mock(
            side_effect=self._wait
        )
        router.delete(url__regex=rf"{BASE_URL}/apps/(?P<app>[^/]+)/machines/(?P<mid>[^/?]+)").mock(
            side_effect=self._destroy
        )

    # ------------------------------------------------------------------ what tests look at
    def all_machines(self) -> list[dict[str, Any]]:
        return [m for by_id in self.machines.values() for m in by_id.values()]

    def backdate(self, delta: timedelta) -> None:
        """Every machine was created `delta` earlier (time passing, as Fly reports it)."""
        for machine in self.all_machines():
            created = datetime.fromisoformat(machine["created_at"].replace("Z", "+00:00"))
            machine["created_at"] = _stamp(created - delta)

    # ------------------------------------------------------------------ the endpoints
    def _create_app(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        if body["app_name"] in self.apps:
            return httpx.Response(422, json={"error": "Name has already been taken"})
        self.app_creates += 1
        self.apps[body["app_name"]] = {"network": body.get("network"), "org_slug": body["org_slug"]}
        self.machines[body["app_name"]] = {}
        return httpx.Response(201)

    def _list_apps(self, request: httpx.Request) -> httpx.Response:
        org = request.url.params.get("org_slug")
        apps = [
            {"name": name, "id": name, "machine_count": len(self.machines[name]), "network": app["network"]}
            for name, app in self.apps.items()
            if app["org_slug"] == org
        ]
        return httpx.Response(200, json={"total_apps": len(apps), "apps": apps})

    def _create_machine(self, request: httpx.Request, app: str) -> httpx.Response:
        if app not in self.apps:
            return httpx.Response(404, json={"error": "app not found"})
        if self.refuse_machines:
            return httpx.Response(412, json={"error": "no capacity", "status": "insufficient_capacity"})
        body = json.loads(request.content)
        if any(m["name"] == body["name"] for m in self.machines[app].values()):
            return httpx.Response(422, json={"error": "name already taken", "status": "name_taken"})
        machine = {
            "id": secrets.token_hex(7),
            "name": body["name"],
            "state": "started",
            "region": body.get("region", "iad"),
            "instance_id": secrets.token_hex(13).upper(),
            "private_ip": "fdaa:0:18:a7b:196:e274:9ce1:2",
            "config": body["config"],
            "created_at": _stamp(datetime.now(UTC)),
        }
        self.machines[app][machine["id"]] = machine
        return httpx.Response(200, json=machine)

    def _list(self, request: httpx.Request, app: str) -> httpx.Response:
        if app not in self.apps:
            return httpx.Response(404, json={"error": "app not found"})
        wanted = request.url.params.get("metadata.session_id")
        found = [
            m for m in self.machines[app].values() if wanted is None or m["config"]["metadata"]["session_id"] == wanted
        ]
        return httpx.Response(200, json=found)

    def _wait(self, request: httpx.Request, app: str, mid: str) -> httpx.Response:
        if mid not in self.machines.get(app, {}):
            return httpx.Response(404, json={"error": "machine not found"})
        if self.never_starts:
            return httpx.Response(408, json={"error": "deadline_exceeded: machine did not reach started"})
        return httpx.Response(200, json={"ok": True})

    def _destroy(self, request: httpx.Request, app: str, mid: str) -> httpx.Response:
        if self.machines.get(app, {}).pop(mid, None) is None:
            return httpx.Response(404, json={"error": "machine not found"})
        return httpx.Response(200, json={"ok": True})


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
