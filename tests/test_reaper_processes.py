"""Two reaper passes in two processes on one Postgres, like two machines' schedules firing at the same moment:
each session closed once, announced once, and its webhook delivered once, signed."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from bench.supabase_stand_in import SupabaseStandIn
from shared.models import Session, Tenant, utcnow
from shared.store.postgres import PostgresStore
from shared.webhook.signature import verify
from tests import pg
from tests.test_server_process import BIN, base_env
from tests.webhook_receiver import WebhookReceiver

SESSIONS = 24
SECRET = "whsec_two-machines"


async def seed_idle_sessions(dsn: str, webhook_url: str) -> set[str]:
    store = PostgresStore(dsn)
    await store.start()
    try:
        tenant = Tenant(id="00000000-0000-4000-8000-00000000ea9e", name="reap", created_at=utcnow())
        await store.create_tenant(tenant, api_key_hash="unused")
        await store.set_tenant_webhook(tenant.id, webhook_url, SECRET)
        ids = set()
        for _ in range(SESSIONS):
            at = utcnow() - timedelta(hours=1)
            session = replace(Session.new(tenant.id, speakers=("candidate",)), created_at=at, last_activity_at=at)
            await store.create_session(session)
            ids.add(session.id)
        return ids
    finally:
        await store.close()


async def reap_in(env: dict[str, str]) -> dict[str, int]:
    process = await asyncio.create_subprocess_exec(
        str(BIN / "interview-bridge"), "reap", env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode == 0, err.decode()
    summary: dict[str, int] = json.loads(out)
    return summary


async def test_two_processes_close_each_session_once_and_announce_it_once(
    pg_server: pg.PgServer, tmp_path: Path
) -> None:
    """Between them the two passes abandon every idle session once, and Supabase gets one session_status each."""
    await pg.check_reachable(pg_server)
    dsn = await pg.create_database(pg_server, "ib_reap")
    try:
        with WebhookReceiver() as receiver, SupabaseStandIn(service_key="service-role") as supabase:
            ids = await seed_idle_sessions(dsn, receiver.url)
            env = base_env(
                tmp_path / "data", 0, DATABASE_URL=dsn, STORE="postgres", STT_ENGINE="simulate",
                BROADCASTER="supabase", SUPABASE_URL=supabase.url, SUPABASE_SERVICE_ROLE_KEY="service-role",
            )  # fmt: skip
            first, second = await asyncio.gather(reap_in(env), reap_in(env))
            announced = Counter(m["payload"]["session_id"] for _, m in supabase.messages("session_status"))
            deliveries = list(receiver.received)
    finally:
        await pg.drop_database(pg_server, dsn)
    assert first["abandoned"] + second["abandoned"] == SESSIONS
    assert announced == Counter(dict.fromkeys(ids, 1))
    assert first["webhooks_sent"] + second["webhooks_sent"] == SESSIONS
    delivered = Counter(json.loads(d.body)["session"]["id"] for d in deliveries)
    assert delivered == Counter(dict.fromkeys(ids, 1))
    now = int(time.time())
    assert all(verify(SECRET, d.body, d.headers["x-bridge-signature"], now=now) for d in deliveries)
