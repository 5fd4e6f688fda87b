"""A client for Fly's Machines API (https://api.machines.dev/v1): apps, per-interview machines, wait, stop, destroy.

Fly limits each action to about one request a second per app or machine (with small bursts) and answers 429 past
that; 408 and 5xx are passing trouble. Those are retried with growing delays, honouring `Retry-After`. A 408 on
create is ambiguous (the machine may exist): machines are created under a unique name, and a create that timed
out or found its name taken looks the machine up by that name instead of making a second one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from shared.errors import ServiceUnavailable

BASE_URL = "https://api.machines.dev/v1"
RETRIED = frozenset({408, 429, 500, 502, 503, 504})
MAX_ATTEMPTS = 5
BACKOFF_S = 1.0


class FlyApiError(ServiceUnavailable):
    """Fly answered with an error the client does not recover from (the text and Fly's `status` are kept)."""

    def __init__(self, detail: str, *, http_status: int, kind: str | None = None) -> None:
        super().__init__(detail)
        self.http_status = http_status
        self.kind = kind  # Fly's error `status`, e.g. "insufficient_capacity", "name_taken"


@dataclass(frozen=True, slots=True)
class Machine:
    id: str
    name: str
    state: str
    region: str | None
    private_ip: str | None
    metadata: dict[str, str]
    created_at: datetime | None = None

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Machine:
        config = body.get("config") or {}
        return cls(
            id=body["id"],
            name=body.get("name", ""),
            state=body.get("state", ""),
            region=body.get("region"),
            private_ip=body.get("private_ip"),
            metadata=dict(config.get("metadata") or {}),
            created_at=_timestamp(body.get("created_at")),
        )


class FlyMachines:
    """One Fly organisation's apps and machines, as the bridge uses them."""

    def __init__(
        self,
        token: str | None = None,
        *,
        base_url: str = BASE_URL,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        token = token or os.environ.get("FLY_API_TOKEN")
        if not token:
            raise FlyApiError("FLY_API_TOKEN is not set", http_status=401)
        self._client = client or httpx.AsyncClient(timeout=30)
        self._base = base_url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._sleep = sleep

    async def aclose(self) -> None:
        await self._client.aclose()

    async def create_app(self, app_name: str, org_slug: str, network: str) -> bool:
        """Create an app on a network of its own; False when it exists already (the name is taken)."""
        response = await self._send("POST", "/apps", json={"app_name": app_name, "org_slug": org_slug,
                                                          "network": network}, ok=(201, 422))  # fmt: skip
        return response.status_code == 201

    async def list_apps(self, org_slug: str) -> list[str]:
        """The names of the organisation's apps."""
        response = await self._send("GET", "/apps", params={"org_slug": org_slug})
        return [app["name"] for app in response.json().get("apps") or []]

    async def create_machine(
        self,
        app: str,
        *,
        name: str,
        image: str,
        session_id: str,
        metadata: dict[str, str] | None = None,
        region: str | None = None,
        env: dict[str, str] | None = None,
        services: list[dict[str, object]] | None = None,
        cpus: int = 2,
        memory_mb: int = 4096,
        cpu_kind: str = "performance",
    ) -> Machine:
        """Start a machine for one session, destroyed when it stops; idempotent by `name`. `metadata` is kept
        beside `session_id` (the bridge adds `tenant_id`)."""
        body: dict[str, Any] = {
            "name": name,
            "config": {
                "image": image,
                "env": env or {},
                "guest": {"cpu_kind": cpu_kind, "cpus": cpus, "memory_mb": memory_mb},
                "auto_destroy": True,
                "restart": {"policy": "no"},
                "metadata": {**(metadata or {}), "session_id": session_id},
            },
        }
        if services is not None:
            body["config"]["services"] = services
        if region is not None:
            body["region"] = region
        for _ in range(MAX_ATTEMPTS):
            response = await self._send("POST", f"/apps/{app}/machines", json=body, ok=(200, 201, 408, 422))
            if response.status_code in (200, 201):
                return Machine.from_json(response.json())
            existing = await self.machine_named(app, name)  # 422: name taken; 408: the create may have happened
            if existing is not None:
                return existing
            if response.status_code == 422:
                raise self._error(response)
        raise FlyApiError(f"creating machine {name} in {app} timed out {MAX_ATTEMPTS} times", http_status=408)

    async def list_machines(self, app: str, *, session_id: str | None = None) -> list[Machine]:
        params = {"metadata.session_id": session_id} if session_id is not None else None
        response = await self._send("GET", f"/apps/{app}/machines", params=params)
        return [Machine.from_json(item) for item in response.json()]

    async def machine_named(self, app: str, name: str) -> Machine | None:
        return next((m for m in await self.list_machines(app) if m.name == name), None)

    async def wait(self, app: str, machine_id: str, *, state: str = "started", timeout_s: int = 60) -> bool:
        """Whether the machine reached `state` within `timeout_s` (Fly answers 408 when it did not)."""
        response = await self._send(
            "GET",
            f"/apps/{app}/machines/{machine_id}/wait",
            params={"state": state, "timeout": str(timeout_s)},
            ok=(200, 408),
            retry=False,
            timeout_s=timeout_s + 10,
        )
        return response.status_code == 200

    async def stop(self, app: str, machine_id: str) -> None:
        await self._send("POST", f"/apps/{app}/machines/{machine_id}/stop")

    async def destroy(self, app: str, machine_id: str) -> None:
        """Destroy a machine, running or not; one already gone is fine."""
        await self._send("DELETE", f"/apps/{app}/machines/{machine_id}", params={"force": "true"}, ok=(200, 404))

    # ------------------------------------------------------------------ the wire
    async def _send(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,),
        retry: bool = True,
        timeout_s: float | None = None,
    ) -> httpx.Response:
        delay = BACKOFF_S
        timeout = httpx.USE_CLIENT_DEFAULT if timeout_s is None else httpx.Timeout(timeout_s)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                response = await self._client.request(
                    method, self._base + path, json=json, params=params, headers=self._headers, timeout=timeout
                )
            except httpx.TransportError as exc:
                if attempt == MAX_ATTEMPTS or not retry:
                    raise FlyApiError(f"cannot reach Fly's Machines API: {exc}", http_status=503) from exc
                await self._sleep(delay)
                delay *= 2
                continue
            if response.status_code in ok:
                return response
            if not retry or response.status_code not in RETRIED or attempt == MAX_ATTEMPTS:
                raise self._error(response)
            await self._sleep(max(delay, _retry_after(response)))
            delay *= 2
        raise AssertionError("unreachable")  # the loop returns or raises

    @staticmethod
    def _error(response: httpx.Response) -> FlyApiError:
        try:
            body = response.json()
        except ValueError:
            body = {}
        text = body.get("error") if isinstance(body, dict) else None
        kind = body.get("status") if isinstance(body, dict) else None
        return FlyApiError(
            f"Fly's Machines API answered {response.status_code}: {text or response.text[:200]}",
            http_status=response.status_code,
            kind=kind,
        )


def _timestamp(value: object) -> datetime | None:
    """Fly's RFC 3339 times (`2024-01-01T12:00:00Z`); None when absent or unreadable."""
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _retry_after(response: httpx.Response) -> float:
    try:
        return float(response.headers.get("retry-after", "0"))
    except ValueError:
        return 0.0
