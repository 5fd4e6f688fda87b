"""Per-interview machines (`PER_INTERVIEW_MACHINES=on`): each session runs on a Fly machine of its own.

Each tenant gets a Fly app of its own, on a private network of its own, created on first use: one tenant's
machines cannot reach another's. `POST /sessions` starts the session's machine there, in the request's region,
and records its id on the session. The shared app then answers that session's writes with
`fly-replay: instance=<id>;app=<tenant app>`, and Fly's proxy replays them on the interview's machine. The
reaper destroys the machines of closed sessions and the orphans a crash left behind.

Nothing depends on a machine for correctness. The store holds every chunk, and any process can process any
chunk. So when Fly cannot give a machine (no capacity, an outage, a slow start), the session is served by the
shared app. A body too large to replay (over 1 MB) is also served where it lands.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.errors import ConfigurationError
from shared.fly_machines import FlyApiError, FlyMachines, Machine
from shared.models import Session, SessionStatus
from shared.settings import Settings

log = logging.getLogger("bridge.machines")

REPLAY_LIMIT_BYTES = 1_000_000  # Fly's proxy cannot replay a larger body
START_TIMEOUT_S = 25  # how long `POST /sessions` waits for the machine to start (within the client's 30 s)
ORPHAN_GRACE = timedelta(minutes=10)  # an unrecorded machine younger than this may be a create in progress
GONE_STATES = frozenset({"destroying", "destroyed"})
INTERNAL_PORT = 8080

# What an interview machine needs to serve its session: the same store, broadcaster, engine and secrets as the
# shared app. Its own reaper is off (the shared app's reaper group runs it) and it never starts machines itself.
FORWARDED = (
    "store",
    "database_url",
    "supabase_url",
    "supabase_service_role_key",
    "supabase_anon_key",
    "supabase_jwt_secret",
    "supabase_private_topics",
    "broadcaster",
    "stt_engine",
    "openai_api_key",
    "openai_model",
    "openai_base_url",
    "whisper_model",
    "partials",
    "session_token_secret",
    "session_token_ttl",
    "max_body_bytes",
    "rate_limits",
    "public_url",
    "session_idle_timeout",
    "session_max_duration",
    "webhook_allow_private",
    "cors_origins",
    "end_grace_s",
    "gap_timeout_s",
    "engine_retry_s",
)  # fmt: skip  (not SERVICE_KEY: an interview machine serves no operator route)
FIXED_ENV = {
    "PER_INTERVIEW_MACHINES": "off",
    "REAPER_INTERVAL": "0",
    "AUTO_MIGRATE": "off",
    "HOST": "0.0.0.0",  # inside the machine: Fly's proxy connects over the private network
    "PORT": str(INTERNAL_PORT),
}


@dataclass(frozen=True, slots=True)
class TenantMachine:
    """A machine found in a tenant's app, as the reaper sees it."""

    app: str
    machine: Machine


class InterviewMachines:
    """Starts, routes to and lists the interview machines of one deployment."""

    def __init__(self, fly: FlyMachines, settings: Settings) -> None:
        check_settings(settings)
        self._fly = fly
        self._org = settings.fly_org
        self._image = settings.fly_image or settings.fly_image_ref or ""
        self._prefix = f"{settings.fly_app_name or 'interview-bridge'}-t-"
        self._own_machine = settings.fly_machine_id
        self._region = settings.interview_machine_region
        self._guest = guest_for(settings.interview_machine_size, settings.interview_machine_memory_mb)
        self._env = machine_env(settings)
        self._apps: set[str] = set()  # tenant apps known to exist

    async def aclose(self) -> None:
        await self._fly.aclose()

    def app_name(self, tenant_id: str) -> str:
        """The tenant's own app: the shared app's name, `-t-` and a digest of the tenant id (app names are global
        on Fly and at most 63 characters)."""
        return self._prefix + hashlib.sha256(tenant_id.encode()).hexdigest()[:16]

    async def start(self, session: Session, request_region: str | None) -> str | None:
        """Start the session's machine and wait until it runs; its id, or None when the shared app serves it."""
        app = self.app_name(session.tenant_id)
        try:
            await self._ensure_app(app)
            machine = await self._fly.create_machine(
                app,
                name=f"session-{session.id}",
                image=self._image,
                session_id=session.id,
                metadata={"tenant_id": session.tenant_id},
                region=self._region or request_region,
                env=self._env,
                services=machine_services(),
                cpu_kind=self._guest.cpu_kind,
                cpus=self._guest.cpus,
                memory_mb=self._guest.memory_mb,
            )
        except FlyApiError as exc:
            log.warning("no machine for session %s, the shared app serves it: %s", session.id, exc.detail)
            return None
        try:
            if await self._fly.wait(app, machine.id, state="started", timeout_s=START_TIMEOUT_S):
                return machine.id
            log.warning("machine %s for session %s did not start in %d s", machine.id, session.id, START_TIMEOUT_S)
        except FlyApiError as exc:
            log.warning("machine %s for session %s: %s", machine.id, session.id, exc.detail)
        try:  # not left running until the reaper's grace: the shared app serves this session
            await self._fly.destroy(app, machine.id)
        except FlyApiError:
            log.warning("machine %s stays until the reaper destroys it", machine.id)
        return None

    async def _ensure_app(self, app: str) -> None:
        if app in self._apps:
            return
        if await self._fly.create_app(app, self._org, network=f"{app}-net"):
            log.info("created app %s on its own network", app)
        self._apps.add(app)

    def replay_to(self, session: Session, headers: Mapping[str, str]) -> str | None:
        """The `fly-replay` value that sends this request to the session's machine, or None to serve it here:
        no machine, this is the machine, the session is closed (late writes and the flush need no machine), the
        request was replayed once already, or its body is too large to replay."""
        machine_id = session.machine_id
        if machine_id is None or machine_id == self._own_machine or session.status is not SessionStatus.ACTIVE:
            return None
        if "fly-replay-src" in headers:
            return None
        try:
            size = int(headers.get("content-length", "0"))
        except ValueError:
            size = 0
        if size > REPLAY_LIMIT_BYTES:
            return None
        return f"instance={machine_id};app={self.app_name(session.tenant_id)}"

    async def running(self) -> list[TenantMachine]:
        """Every machine in the deployment's tenant apps that is not already going away."""
        found: list[TenantMachine] = []
        for app in await self._fly.list_apps(self._org):
            if not app.startswith(self._prefix):
                continue
            try:
                machines = await self._fly.list_machines(app)
            except FlyApiError as exc:  # one app's trouble leaves the other tenants' machines to be handled
                log.warning("listing the machines of %s failed: %s", app, exc.detail)
                continue
            found.extend(TenantMachine(app, m) for m in machines if m.state not in GONE_STATES)
        return found

    async def destroy(self, found: TenantMachine) -> None:
        await self._fly.destroy(found.app, found.machine.id)


def should_destroy(machine: Machine, session: Session | None, now: datetime) -> bool:
    """A machine goes when its session is closed, and, once it is older than ORPHAN_GRACE, when its session is
    unknown (a crash between create and record) or records another machine (a retried create)."""
    if session is not None and session.status is not SessionStatus.ACTIVE:
        return True
    created = machine.created_at or now - ORPHAN_GRACE
    if now - created < ORPHAN_GRACE:
        return False
    return session is None or session.machine_id != machine.id


@dataclass(frozen=True, slots=True)
class Guest:
    cpu_kind: str
    cpus: int
    memory_mb: int


def guest_for(size: str, memory_mb: int) -> Guest:
    """Fly's size names (`performance-2x`, `shared-cpu-1x`) as a machine's guest."""
    kind, _, count = size.rpartition("-")
    if not count.endswith("x") or not count[:-1].isdigit() or not kind.startswith(("performance", "shared")):
        raise ConfigurationError(f"INTERVIEW_MACHINE_SIZE {size!r} is not a Fly size like performance-2x")
    if memory_mb % 256:
        raise ConfigurationError("INTERVIEW_MACHINE_MEMORY_MB must be a multiple of 256")
    return Guest("performance" if kind.startswith("performance") else "shared", int(count[:-1]), memory_mb)


def check_settings(settings: Settings) -> None:
    """Per-interview machines need what machines can share: a database and Supabase Realtime (a SQLite file and
    the in-process hub live in one process), a Fly token and an image."""
    problems = []
    if settings.resolved_store() == "sqlite":
        problems.append("a shared store (DATABASE_URL or SUPABASE_URL), not SQLite")
    if settings.resolved_broadcaster() != "supabase":
        problems.append("Supabase Realtime (SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY), not the in-process hub")
    if not settings.fly_api_token:
        problems.append("FLY_API_TOKEN")
    if not (settings.fly_image or settings.fly_image_ref):
        problems.append("FLY_IMAGE (the image the machines run)")
    if problems:
        raise ConfigurationError("PER_INTERVIEW_MACHINES=on needs " + "; ".join(problems))


def machine_env(settings: Settings) -> dict[str, str]:
    env: dict[str, str] = {}
    for name in FORWARDED:
        value = getattr(settings, name)
        if isinstance(value, list):
            value = ",".join(value) or None
        if value is not None:
            env[name.upper()] = str(value)
    return {**env, **FIXED_ENV}


def machine_services() -> list[dict[str, object]]:
    """HTTPS on 443 to the bridge's port, never stopped by the proxy (the reaper destroys it), checked on /health."""
    return [
        {
            "protocol": "tcp",
            "internal_port": INTERNAL_PORT,
            "autostop": "off",
            "autostart": False,
            "ports": [{"port": 443, "handlers": ["tls", "http"]}, {"port": 80, "handlers": ["http"]}],
            "checks": [{"type": "http", "method": "get", "path": "/health", "interval": "15s", "timeout": "5s"}],
        }
    ]
