"""Load on the live path over HTTP: the bridge beside a bare Litestar floor, at max and at real-time pace.

    .venv/bin/python bench/load.py                                     # 64 interviews, max pace, both stores, WAV
    .venv/bin/python bench/load.py --sessions 4 --seconds 3 --stores sqlite --formats wav,webm --latency-ms 0
    .venv/bin/python bench/load.py --pace realtime --seconds 30 --formats wav,webm --latency-ms 0,500
    .venv/bin/python bench/load.py --capacity --max-interviews 1000 --seconds 30 --stores postgres
    .venv/bin/python bench/load.py --capacity --steps 4,8 --seconds 6 --stores sqlite    # a smoke run

What runs: a real `interview-bridge serve` (simulate engine with SIMULATE_LATENCY_MS, rate limits off) and, in
the same run, a bare Litestar app on uvicorn with the same uvicorn options (`bench/load.py --serve-bare PORT`).
Its one route parses the same JSON body and base64-decodes the chunk, then answers a similar JSON without
storing anything: the floor against which the bridge's own work (auth, store, scheduling) shows. Both get the
same client load, one after the other, never at once; the ratio is bridge chunks/s over bare chunks/s.

Load: `--sessions` interviews x 2 speakers; each speaker posts its chunks strictly in sequence (the next only
after the previous answer), at most `--concurrency` in flight. `--pace max` sends as fast as answers come for
`--seconds`; `--pace realtime` sends one chunk per speaker every 2 s (start phases spread over 2 s), as a
browser does. `--formats wav`: real 2 s WAV chunks of tests/fixtures/live/two_sentences.flac, then two of
silence (bench/throughput.py's cycle); `webm`: a browser's MediaRecorder WebM/Opus chunks, the header chunk
webm_chunk_000 first, then the continuation chunks 001..004 over and over. The client runs in `--clients`
processes of its own (auto: one at max pace, enough for the offered rate at real-time pace), and prints its CPU
and event-loop lag, so a busy client does not pass for a slow server.

Printed per (store, format, pace, engine latency): chunks/s, ratio to bare, process-audio response time
p50/p95/p99 (the answer comes once the chunk is stored; processing follows it), errors (non-2xx, exceptions),
server CPU seconds and RSS (/proc/<pid>/stat and status of the server's process group at the start and end of
the load), and POST-to-subscriber latency: up to `--subscribers` sessions are watched by raw Supabase Realtime
(Phoenix vsn 1.0.0) clients on `session:{id}`, and each `transcript_entry` is matched to the send time of its
(session, speaker, last_sequence) chunk, the chunk whose arrival closed the utterance when the pause ends in
it (an inner-pause cut adds the wait for the next chunk). CLOCK_MONOTONIC is system-wide, so send times taken
in the client processes and arrival times taken here compare. At real-time pace entries need time: the WAV
cycle's first pause comes ~6 s in, so use `--seconds` 20 or more to see them.

`--capacity`: real-time pace, simulate latency 500 ms, a fresh bridge (and store) per step of 100, 250, 500, 750,
1000, ... interviews up to `--max-interviews` (or `--steps`), `--seconds` each. Per step: the bridge overhead at
p99 (process-audio response p99, which no longer waits for the engine; and POST-to-subscriber p99 minus the
500 ms engine latency) and finally the largest step within budget: response p99 under 250 ms AND the entry's
p99 after the speaker's latest chunk, less the 500 ms engine, under 250 ms (answers alone can stay fast while
processing falls behind). Stepping stops after the first step over budget unless `--all-steps`.

Postgres: DATABASE_URL or `--database-url` (default postgresql://postgres@127.0.0.1:5432/postgres) names the
server; each bridge gets a scratch database, dropped afterwards. A watchdog (`--timeout`, auto from the plan)
kills every server and client process and drops the scratch databases if a run hangs. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlencode, urlsplit

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from websockets.asyncio.client import ClientConnection, connect  # noqa: E402

from bench.supabase_stand_in import SupabaseStandIn  # noqa: E402
from bench.throughput import (  # noqa: E402
    CHUNK_SECONDS,
    DEFAULT_PG,
    SECRET,
    drop_database,
    free_port,
    scratch_database,
    settings_for,
    stream_chunks,
)
from shared.credentials import hash_api_key, new_api_key  # noqa: E402
from shared.models import Tenant, utcnow  # noqa: E402
from shared.store.factory import create_store  # noqa: E402

ROUTE = "/functions/v1/process-audio"
SPEAKERS = ("interviewer", "candidate")
AUDIO_DIR = REPO / "tests" / "fixtures" / "audio"
WEBM_MIME = "audio/webm;codecs=opus"
CAPACITY_LATENCY_MS = 500
BUDGET_MS = 250.0
CLIENT_RATE = 300.0  # chunks/s one client process is trusted to send on time (sizes the auto `--clients`)
CLIENT_LAG_MS = 50.0  # a client event loop later than this at p99 could not keep pace
TICK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------------------------- clean-up
class Cleanup:
    """What must not outlive the run, however it ends: server and client process groups, scratch databases."""

    def __init__(self) -> None:
        self.groups: set[int] = set()
        self.databases: dict[str, str] = {}  # scratch DSN -> admin DSN
        self.dirs: set[Path] = set()

    def kill(self) -> None:
        for pgid in list(self.groups):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            self.groups.discard(pgid)

    def drop(self) -> None:
        """Synchronous, so the watchdog thread and the final `finally` can call it with no loop running."""
        for path in list(self.dirs):
            shutil.rmtree(path, ignore_errors=True)
            self.dirs.discard(path)
        if self.databases:
            asyncio.run(self._drop())

    async def _drop(self) -> None:
        for dsn, admin in list(self.databases.items()):
            try:
                async with asyncio.timeout(30):
                    await drop_database(admin, dsn)
            except Exception as exc:
                print(f"  could not drop {dsn}: {type(exc).__name__}: {exc}", file=sys.stderr)
            self.databases.pop(dsn, None)


CLEANUP = Cleanup()


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A temporary directory the watchdog removes too (it ends the process without running `finally`)."""
    path = Path(tempfile.mkdtemp(prefix="ib-load-"))
    CLEANUP.dirs.add(path)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        CLEANUP.dirs.discard(path)


def arm_watchdog(seconds: float) -> threading.Timer:
    """A hung run must not leave servers, clients or databases behind: kill, drop, exit."""

    def fire() -> None:
        print(f"\nwatchdog: {seconds:.0f} s passed; killing every process, dropping scratch DBs", file=sys.stderr)
        CLEANUP.kill()
        CLEANUP.drop()
        os._exit(3)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    return timer


def on_sigterm(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


# ------------------------------------------------------------------------------------------------ audio
@dataclass(frozen=True)
class Audio:
    """One speaker's chunks as base64: `first` (a stream header, WebM) at sequence 0, then `cycle` over and over."""

    name: str
    mime: str
    cycle: list[str]
    first: str | None = None

    def chunk(self, sequence: int, offset: int) -> str:
        if self.first is not None:
            return self.first if sequence == 0 else self.cycle[(sequence - 1 + offset) % len(self.cycle)]
        return self.cycle[(sequence + offset) % len(self.cycle)]


def load_audio(name: str) -> Audio:
    if name == "wav":
        return Audio("wav", "audio/wav", stream_chunks())
    if name == "webm":
        parts = [base64.b64encode((AUDIO_DIR / f"webm_chunk_{i:03d}.webm").read_bytes()).decode() for i in range(5)]
        return Audio("webm", WEBM_MIME, parts[1:], first=parts[0])
    raise SystemExit(f"unknown format {name!r}: wav or webm")


# ------------------------------------------------------------------------------------------ client side
@dataclass(frozen=True)
class Stream:
    """One speaker of one session, as one browser tab would send it."""

    session_id: str
    speaker: str
    token: str
    offset: int  # where in the audio cycle this speaker starts, so speakers do not pause in lockstep
    phase_s: float  # real-time pace: when in the first 2 s this speaker's first chunk leaves
    watched: bool  # a subscriber watches this session: keep the send time of every chunk


@dataclass(frozen=True)
class Job:
    """What one client process sends, and how."""

    url: str
    pace: str
    seconds: float
    concurrency: int
    audio: Audio
    streams: list[Stream]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(
            url=data["url"],
            pace=data["pace"],
            seconds=data["seconds"],
            concurrency=data["concurrency"],
            audio=Audio(**data["audio"]),
            streams=[Stream(**s) for s in data["streams"]],
        )


@dataclass
class ClientStats:
    """One client process's record of its run; merged across processes by the parent."""

    latencies: list[float] = field(default_factory=list)  # s, answered 2xx
    http_errors: int = 0
    exceptions: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    samples: list[str] = field(default_factory=list)  # the first few error messages
    sent: dict[str, float] = field(default_factory=dict)  # "session|speaker|seq" -> monotonic send time (watched)
    behind: list[float] = field(default_factory=list)  # real-time pace: how late each chunk left vs. its due time
    loop_lag: list[float] = field(default_factory=list)  # s the event loop overslept a 50 ms timer
    cpu_s: float = 0.0
    wall_s: float = 0.0
    processes: int = 1

    def note(self, message: str) -> None:
        if len(self.samples) < 5 and message not in self.samples:
            self.samples.append(message)


def body_of(stream: Stream, audio: Audio, sequence: int) -> bytes:
    """The request body, built by concatenation: json.dumps of an 85 KB string per request costs the client."""
    head = json.dumps(
        {
            "session_id": stream.session_id,
            "speaker": stream.speaker,
            "sequence_number": sequence,
            "mime_type": audio.mime,
        }
    )
    return f'{head[:-1]}, "audio_chunk": "{audio.chunk(sequence, stream.offset)}"}}'.encode()


class Connection:
    """One keep-alive HTTP/1.1 connection speaking just enough of the protocol for this POST.

    httpx cost the client more CPU per request than the bridge spends on it: at 400 interviews two client
    processes took 1.4 of the 2 cores and the server starved. This writes prepared bytes and reads one
    Content-Length answer, so the load generator stays a small share of the machine."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def head(self, token: str, length: int) -> bytes:
        return (
            f"POST {ROUTE} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
        ).encode()

    async def post(self, token: str, body: bytes) -> tuple[int, bytes]:
        """(status, body); a connection the server closed while idle is reopened once (chunks are idempotent)."""
        for attempt in (0, 1):
            reused = self.writer is not None
            if self.writer is None:
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
            assert self.reader is not None and self.writer is not None
            try:
                self.writer.writelines((self.head(token, len(body)), body))
                raw = await self.reader.readuntil(b"\r\n\r\n")
                status, length = self._parse_head(raw)
                return status, await self.reader.readexactly(length)
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt or not reused:
                    raise
        raise AssertionError("unreachable")

    @staticmethod
    def _parse_head(raw: bytes) -> tuple[int, int]:
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                return status, int(value)
        raise ConnectionError(f"an answer without Content-Length: {lines[0]}")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def post_chunk(connection: Connection, token: str, body: bytes, stats: ClientStats) -> bool:
    try:
        status, answer = await connection.post(token, body)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        stats.exceptions += 1
        stats.note(f"{type(exc).__name__}: {exc}")
        return False
    if status // 100 != 2:
        stats.http_errors += 1
        stats.note(f"{status} {answer[:160].decode(errors='replace')}")
        return False
    outcome = str(json.loads(answer).get("status"))
    stats.statuses[outcome] = stats.statuses.get(outcome, 0) + 1
    return True


async def speak(job: Job, stream: Stream, stats: ClientStats, gate: asyncio.Semaphore, start_at: float) -> None:
    """One speaker's chunks in sequence order on its own connection, the next only after the previous answer."""
    deadline = start_at + job.seconds
    connection = Connection(job.url)
    try:
        await send_stream(connection, job, stream, stats, gate, start_at, deadline)
    finally:
        connection.close()


async def send_stream(
    connection: Connection,
    job: Job,
    stream: Stream,
    stats: ClientStats,
    gate: asyncio.Semaphore,
    start_at: float,
    deadline: float,
) -> None:
    sequence = 0
    while True:
        due = start_at + stream.phase_s + sequence * CHUNK_SECONDS
        if job.pace == "realtime":
            if due >= deadline:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        elif time.monotonic() >= deadline:
            return
        body = body_of(stream, job.audio, sequence)
        async with gate:
            sent = time.monotonic()
            ok = await post_chunk(connection, stream.token, body, stats)
            took = time.monotonic() - sent
        if ok:
            stats.latencies.append(took)
        if job.pace == "realtime":
            stats.behind.append(sent - due)
        if stream.watched:
            stats.sent[f"{stream.session_id}|{stream.speaker}|{sequence}"] = sent
        sequence += 1


async def watch_loop(stats: ClientStats, until: float) -> None:
    """How late a 50 ms timer fires: the client's own saturation, separate from the server's."""
    while time.monotonic() < until:
        before = time.monotonic()
        await asyncio.sleep(0.05)
        stats.loop_lag.append(time.monotonic() - before - 0.05)


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def client_main(job: Job) -> None:
    """A client process: READY once set up, then `GO <monotonic start>` on stdin, then RESULT <json> on stdout."""
    raise_fd_limit()
    stats = ClientStats()
    gate = asyncio.Semaphore(job.concurrency)
    print("READY", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    start_at = float(line.split()[1])
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    cpu0 = cpu_seconds()
    watcher = asyncio.create_task(watch_loop(stats, start_at + job.seconds))
    try:
        async with asyncio.timeout(job.seconds + 60):
            await asyncio.gather(*(speak(job, s, stats, gate, start_at) for s in job.streams))
    except TimeoutError:  # answers stopped coming: report what was measured rather than nothing
        stats.note(f"client gave up {job.seconds + 60:.0f} s after the start with requests still in flight")
    stats.wall_s = time.monotonic() - start_at
    stats.cpu_s = cpu_seconds() - cpu0
    watcher.cancel()
    print("RESULT " + json.dumps(asdict(stats)), flush=True)


def merge(parts: list[ClientStats]) -> ClientStats:
    total = ClientStats(processes=len(parts))
    for part in parts:
        total.latencies += part.latencies
        total.http_errors += part.http_errors
        total.exceptions += part.exceptions
        for status, count in part.statuses.items():
            total.statuses[status] = total.statuses.get(status, 0) + count
        for sample in part.samples:
            total.note(sample)
        total.sent.update(part.sent)
        total.behind += part.behind
        total.loop_lag += part.loop_lag
        total.cpu_s = max(total.cpu_s, part.cpu_s)  # the busiest process: is one of them saturated?
        total.wall_s = max(total.wall_s, part.wall_s)
    return total


# ------------------------------------------------------------------------------------------ bare server
def serve_bare(port: int) -> None:
    """The floor: the bridge's own JSON parse, model and base64 decode, nothing stored, same uvicorn."""
    import uvicorn
    from litestar import Litestar, Request, get, post

    from bridge.routes import parse_json_object
    from functions.process_audio.models import ProcessAudioRequest, decode_audio_field

    @post(ROUTE, status_code=200)
    async def process_audio(request: Request[Any, Any, Any]) -> dict[str, Any]:
        chunk = ProcessAudioRequest.model_validate(parse_json_object(await request.body()))
        data = decode_audio_field(chunk.audio_chunk)
        status = "accepted" if data else "skipped"
        return {"status": status, "sequence_number": chunk.sequence_number, "entries": [], "partial": None}

    @get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app = Litestar(route_handlers=[process_audio, health], logging_config=None)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=port,
        log_level="info",  # as `interview-bridge serve`: both pay for the access log
        timeout_graceful_shutdown=30,
        ws="websockets-sansio",
        ws_per_message_deflate=False,
    )


# ---------------------------------------------------------------------------------------------- servers
@dataclass
class Server:
    name: str
    url: str
    process: asyncio.subprocess.Process
    log: Path
    api_key: str = ""
    realtime: SupabaseStandIn | None = None  # with --workers: lines arrive here instead of at the local hub


async def start_server(name: str, command: list[str], env: dict[str, str], port: int, log: Path) -> Server:
    """Its own process group (killed whole at the end); stderr to a log we scan for warnings afterwards."""
    with log.open("ab") as sink:
        process = await asyncio.create_subprocess_exec(
            *command, env=env, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL, stderr=sink
        )
    CLEANUP.groups.add(process.pid)
    server = Server(name, f"http://127.0.0.1:{port}", process, log)
    await wait_healthy(server)
    return server


async def wait_healthy(server: Server) -> None:
    async with httpx.AsyncClient(base_url=server.url, timeout=5) as http:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/health")).status_code == 200:
                    return
            if server.process.returncode is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{server.name} did not start; see {server.log}")
            await asyncio.sleep(0.2)


async def stop_server(server: Server) -> None:
    process = server.process
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
    CLEANUP.groups.discard(process.pid)


def log_problems(log: Path) -> list[str]:
    """Warnings, errors and tracebacks the server logged: its JSON lines at those levels, and any other line
    (the bare app's, a crash's) that names one."""
    if not log.exists():
        return []
    keys = ("WARNING", "ERROR", "CRITICAL", "Traceback", "Exception")
    problems = []
    for line in log.read_text(errors="replace").splitlines():
        try:
            level = json.loads(line).get("level", "") if line.startswith("{") else None
        except json.JSONDecodeError:
            level = None
        if level in ("warning", "error", "critical") or (level is None and any(k in line for k in keys)):
            problems.append(line)
    return problems


async def start_bare(tmp: Path) -> Server:
    port = free_port()
    command = [sys.executable, str(SCRIPT), "--serve-bare", str(port)]
    return await start_server("bare", command, dict(os.environ), port, tmp / "bare.log")


async def start_bridge(
    store: str, dsn: str | None, latency_ms: int, args: argparse.Namespace, tmp: Path, extra: list[str]
) -> Server:
    """`interview-bridge serve` on a fresh data dir (and scratch DB): simulate engine, rate limits off."""
    data_dir = Path(tempfile.mkdtemp(prefix="ib-load-", dir=tmp))
    setup = create_store(settings_for(store, data_dir, dsn))  # migrate and make the tenant before it starts
    await setup.start()
    api_key = new_api_key()
    await setup.create_tenant(Tenant(id=str(uuid.uuid4()), name="load", created_at=utcnow()), hash_api_key(api_key))
    await setup.close()
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("SUPABASE_URL", "OPENAI_API_KEY", "DATABASE_URL")}
    env.update(
        DATA_DIR=str(data_dir), STORE=store, STT_ENGINE="simulate", SIMULATE_LATENCY_MS=str(latency_ms),
        PARTIALS=args.partials, RATE_LIMITS="off", SESSION_TOKEN_SECRET=SECRET, BROADCASTER="local",
        HOST="127.0.0.1", PORT=str(port),
    )  # fmt: skip
    if dsn:
        env["DATABASE_URL"] = dsn
    realtime: SupabaseStandIn | None = None
    if args.workers > 1:  # several processes broadcast through Supabase (the local hub serves one process)
        realtime = SupabaseStandIn(service_key="load-stand-in")
        env.update(BROADCASTER="supabase", SUPABASE_URL=realtime.url, SUPABASE_SERVICE_ROLE_KEY="load-stand-in")
    binary = Path(sys.executable).parent / "interview-bridge"
    command = [str(binary), "serve", "--engine", "simulate", "--host", "127.0.0.1", "--port", str(port), *extra]
    server = await start_server("bridge", command, env, port, data_dir / "serve.log")
    server.api_key, server.realtime = api_key, realtime
    return server


def serve_options() -> str:
    """`interview-bridge serve --help`, read once: `--workers` is passed only if serve has it."""
    binary = Path(sys.executable).parent / "interview-bridge"
    done = subprocess.run([str(binary), "serve", "--help"], capture_output=True, text=True, timeout=60, check=False)
    return done.stdout


# ---------------------------------------------------------------------------------------- server usage
@dataclass(frozen=True)
class Usage:
    cpu_s: float
    rss_mb: float
    peak_mb: float


def group_usage(pgid: int) -> Usage:
    """CPU seconds and RSS summed over the server's process group, from /proc/<pid>/stat and status."""
    cpu = rss = peak = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:
                continue
            cpu += (int(fields[11]) + int(fields[12])) / TICK
            status = (entry / "status").read_text()
        except (OSError, IndexError, ValueError):
            continue
        rss += status_kb(status, "VmRSS") / 1024
        peak += status_kb(status, "VmHWM") / 1024
    return Usage(cpu, rss, peak)


def status_kb(status: str, key: str) -> float:
    for line in status.splitlines():
        if line.startswith(key + ":"):
            return float(line.split()[1])
    return 0.0


# ------------------------------------------------------------------------------------------ subscribers
def entry_key(entry: dict[str, Any]) -> str:
    """An entry named as the client names its chunks: "session|speaker|last_sequence"."""
    return f"{entry['session_id']}|{entry['speaker']}|{entry['last_sequence']}"


class Watcher:
    """A raw Phoenix vsn 1.0.0 client on `session:{id}`: frames are timestamped on arrival, parsed at the end."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[tuple[float, str]] = []
        self.tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._beat())]

    async def _read(self) -> None:
        async for frame in self.ws:
            self.frames.append((time.monotonic(), frame if isinstance(frame, str) else frame.decode()))

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(20)
            await self.ws.send('{"topic":"phoenix","event":"heartbeat","payload":{},"ref":null}')

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self.ws.close()

    def entries(self) -> list[tuple[float, str]]:
        """(arrival, "session|speaker|last_sequence") of every transcript_entry."""
        found = []
        for at, frame in self.frames:
            message = json.loads(frame)
            inner = message.get("payload") or {}
            if message.get("event") == "broadcast" and inner.get("event") == "transcript_entry":
                found.append((at, entry_key(inner["payload"])))
        return found


async def open_watcher(base_url: str, session_id: str, token: str) -> Watcher:
    query = urlencode({"apikey": token, "vsn": "1.0.0"})
    ws = await connect(f"{base_url.replace('http', 'ws', 1)}/realtime/v1/websocket?{query}", open_timeout=30)
    join = {
        "topic": f"realtime:session:{session_id}",
        "event": "phx_join",
        "payload": {"config": {"broadcast": {"ack": False, "self": False}, "private": False}, "access_token": token},
        "ref": "1",
        "join_ref": "1",
    }
    await ws.send(json.dumps(join))
    reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
    if (reply.get("payload") or {}).get("status") != "ok":
        await ws.close()
        raise RuntimeError(f"join of session:{session_id} refused: {reply}")
    return Watcher(ws)


# ----------------------------------------------------------------------------------------------- a load
@dataclass(frozen=True)
class Plan:
    pace: str
    seconds: float
    concurrency: int
    clients: int
    watch: int  # sessions with a subscriber


@dataclass
class Load:
    """One measured run against one server."""

    target: str  # bridge | bare
    store: str
    audio: str
    pace: str
    latency_ms: int | None
    sessions: int
    client: ClientStats
    start: Usage
    end: Usage
    deliveries: list[float] = field(default_factory=list)  # s, POST of last_sequence -> transcript_entry
    closest: list[float] = field(default_factory=list)  # s, latest POST (seq >= last_sequence) before it arrived
    unmatched: int = 0  # entries whose closing chunk's send time is unknown
    watched: int = 0
    problems: list[str] = field(default_factory=list)
    bare_rate: float | None = None

    @property
    def rate(self) -> float:
        return len(self.client.latencies) / self.client.wall_s if self.client.wall_s else 0.0

    @property
    def errors(self) -> int:
        return self.client.http_errors + self.client.exceptions

    @property
    def cpu_s(self) -> float:
        return self.end.cpu_s - self.start.cpu_s

    def p(self, q: float) -> float:
        return pct(self.client.latencies, q)

    def d(self, q: float) -> float:
        return pct(self.deliveries, q)

    def c(self, q: float) -> float:
        return pct(self.closest, q)

    @property
    def client_bound(self) -> bool:
        busy = self.client.wall_s and self.client.cpu_s / self.client.wall_s > 0.9
        return bool(busy) or pct(self.client.loop_lag, 99) > CLIENT_LAG_MS


def pct(values: list[float], q: float) -> float:
    """The q-th percentile in ms; NaN for no samples."""
    return float(np.percentile(values, q)) * 1000 if values else float("nan")


def make_streams(sessions: list[tuple[str, str]], watch: int) -> list[Stream]:
    rng = random.Random(7)
    return [
        Stream(sid, speaker, token, offset=3 * (2 * i + j), phase_s=rng.uniform(0, CHUNK_SECONDS), watched=i < watch)
        for i, (sid, token) in enumerate(sessions)
        for j, speaker in enumerate(SPEAKERS)
    ]


async def spawn_client(job: Job) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPT), "--client-worker",
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True, limit=1 << 28,
    )  # fmt: skip
    CLEANUP.groups.add(process.pid)
    assert process.stdin is not None
    process.stdin.write((json.dumps(asdict(job)) + "\n").encode())
    await process.stdin.drain()
    return process


async def expect(process: asyncio.subprocess.Process, prefix: bytes) -> bytes:
    """The client's next line starting with `prefix` (anything else it prints is passed over)."""
    assert process.stdout is not None
    while True:
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"a client process ended (exit {await process.wait()}) before {prefix.decode()!r}")
        if line.startswith(prefix):
            return line[len(prefix) :]


async def run_clients(jobs: list[Job], seconds: float, server: Server) -> tuple[ClientStats, Usage, Usage]:
    """Start every client process, let them all go at one monotonic instant, gather their records."""
    processes = [await spawn_client(job) for job in jobs]
    try:
        await asyncio.wait_for(asyncio.gather(*(expect(p, b"READY") for p in processes)), 120)
        start = group_usage(server.process.pid)
        start_at = time.monotonic() + 0.3
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(f"GO {start_at!r}\n".encode())
            await process.stdin.drain()
        profiler = await start_profiler(server, seconds)
        sampler = asyncio.create_task(sample_rss(server.process.pid, RSS_SAMPLES))
        try:
            raw = await asyncio.wait_for(asyncio.gather(*(expect(p, b"RESULT ") for p in processes)), seconds + 120)
        finally:
            sampler.cancel()
        end = group_usage(server.process.pid)
        if profiler is not None:
            await asyncio.wait_for(profiler.wait(), 120)
        for process in processes:
            await asyncio.wait_for(process.wait(), 30)
    finally:
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
            CLEANUP.groups.discard(process.pid)
    return merge([ClientStats(**json.loads(line)) for line in raw]), start, end


RSS_SAMPLES: list[tuple[float, float]] = []  # (monotonic, MB) of the server during the latest load
RSS_EVERY_S = 10.0


async def sample_rss(pgid: int, samples: list[tuple[float, float]]) -> None:
    """The server's RSS every RSS_EVERY_S during a load: flat, or growing with time at a steady load?"""
    samples.clear()
    while True:
        samples.append((time.monotonic(), group_usage(pgid).rss_mb))
        await asyncio.sleep(RSS_EVERY_S)


def rss_trend(samples: list[tuple[float, float]]) -> str:
    """Mean RSS over the first and the last minute of a load after its first minute (warm-up), if it ran 3+ min."""
    if len(samples) < 2 or samples[-1][0] - samples[0][0] < 180:
        return ""
    t0, t_end = samples[0][0], samples[-1][0]
    first = [mb for t, mb in samples if 60 <= t - t0 < 120]
    last = [mb for t, mb in samples if t >= t_end - 60]
    a, b = sum(first) / len(first), sum(last) / len(last)
    return f"RSS minute 2 {a:.0f} MB -> last minute {b:.0f} MB ({100 * (b - a) / a:+.1f}%)"


PROFILE: dict[str, Path] = {}  # "dir" -> where `--profile` writes flame graphs


async def start_profiler(server: Server, seconds: float) -> asyncio.subprocess.Process | None:
    """py-spy on the server's processes for the load's duration (`--profile DIR`), as a flame graph SVG."""
    folder = PROFILE.get("dir")
    if folder is None or server.name != "bridge":
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    fmt = os.environ.get("PROFILE_FORMAT", "flamegraph")  # or `raw` (collapsed stacks) to sum up by function
    out = folder / f"bridge-{int(time.time())}.{'svg' if fmt == 'flamegraph' else 'txt'}"
    command = [spy, "record", "--pid", str(server.process.pid), "--subprocesses", "--duration", str(int(seconds)),
               "--rate", "200", "--output", str(out), "--format", fmt, "--nonblocking",
               *os.environ.get("PROFILE_ARGS", "").split()]  # fmt: skip  # e.g. PROFILE_ARGS=--gil
    print(f"profiling the bridge into {out}")
    return await asyncio.create_subprocess_exec(*command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def drive(server: Server, audio: Audio, sessions: list[tuple[str, str]], plan: Plan, label: Load) -> Load:
    """The same client load against either server; with subscribers on the bridge's watched sessions."""
    streams = make_streams(sessions, plan.watch)
    per_client = math.ceil(plan.concurrency / plan.clients)
    jobs = [
        Job(server.url, plan.pace, plan.seconds, per_client, audio, streams[i :: plan.clients])
        for i in range(plan.clients)
    ]
    if server.realtime is not None:
        return await drive_through_supabase(server, server.realtime, jobs, plan, label, sessions)
    watchers = [await open_watcher(server.url, sid, token) for sid, token in sessions[: plan.watch]]
    try:
        client, start, end = await run_clients(jobs, plan.seconds, server)
        if watchers:
            await until_quiet(lambda: latest_frame(watchers), quiet_after(label))
    finally:
        for watcher in watchers:
            await watcher.close()
    label.client, label.start, label.end, label.watched = client, start, end, len(watchers)
    match(label, [entry for watcher in watchers for entry in watcher.entries()])
    return label


async def drive_through_supabase(
    server: Server, realtime: SupabaseStandIn, jobs: list[Job], plan: Plan, label: Load, sessions: list[Any]
) -> Load:
    """As `drive`, with the lines taken where the bridge hands them to Supabase Realtime (the stand-in)."""
    watched = {sid for sid, _ in sessions[: plan.watch]}
    client, start, end = await run_clients(jobs, plan.seconds, server)
    await until_quiet(lambda: realtime.received[-1][0] if realtime.received else None, quiet_after(label))
    label.client, label.start, label.end, label.watched = client, start, end, len(watched)
    lines = [(at, message["payload"]) for at, message in realtime.messages("transcript_entry")]
    match(label, [(at, entry_key(entry)) for at, entry in lines if entry["session_id"] in watched])
    return label


def match(load: Load, arrivals: list[tuple[float, str]]) -> None:
    """Each entry against the send of its last_sequence chunk (the brief's measure), and against the latest
    chunk of its speaker (sequence >= last_sequence) sent before it arrived. The two differ by a chunk interval
    when a pause straddles a chunk boundary: the cut lies in chunk k, but only chunk k+1 shows the pause ended.
    At real-time pace the second is exact while deliveries take under 2 s, and a lower bound beyond."""
    sends: dict[str, list[tuple[int, float]]] = {}
    for key, at in load.client.sent.items():
        stream, sequence = key.rsplit("|", 1)
        sends.setdefault(stream, []).append((int(sequence), at))
    for arrived, key in arrivals:
        stream, last = key.rsplit("|", 1)
        before = [at for sequence, at in sends.get(stream, []) if sequence >= int(last) and at <= arrived]
        if key not in load.client.sent or not before:
            load.unmatched += 1
            continue
        load.deliveries.append(arrived - load.client.sent[key])
        load.closest.append(arrived - max(before))


def latest_frame(watchers: list[Watcher]) -> float | None:
    return max((w.frames[-1][0] for w in watchers if w.frames), default=None)


def quiet_after(label: Load) -> float:
    """How long no line may arrive before a load's backlog counts as delivered: longer with a slow engine."""
    return 2.0 + 2 * (label.latency_ms or 0) / 1000


async def until_quiet(last_arrival: Callable[[], float | None], quiet_s: float, within_s: float = 60.0) -> None:
    """Entries of a backlog keep coming after the load stops: wait until nothing arrives for `quiet_s` (at most
    `within_s`), else the slowest deliveries would be cut off and the percentiles flattered."""
    ended = time.monotonic()
    deadline = ended + within_s
    while time.monotonic() < deadline:
        if time.monotonic() - max(ended, last_arrival() or ended) >= quiet_s:
            return
        await asyncio.sleep(0.25)


async def create_sessions(server: Server, count: int) -> list[tuple[str, str]]:
    """(session id, session token) pairs, made through the API as a client would."""
    gate = asyncio.Semaphore(16)
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:

        async def one() -> tuple[str, str]:
            async with gate:
                response = await http.post("/sessions", json={}, headers={"Authorization": f"Bearer {server.api_key}"})
            response.raise_for_status()
            created = response.json()
            return str(created["session"]["id"]), str(created["token"])

        return list(await asyncio.gather(*(one() for _ in range(count))))


async def warm_up(server: Server, audio: Audio, session: tuple[str, str]) -> None:
    """Load the VAD model and warm the store before timing; wait_ms so processing is done too."""
    stream = Stream(session[0], "warm", session[1], 0, 0.0, False)
    headers = {"Authorization": f"Bearer {session[1]}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
        for sequence in range(3):
            body = json.loads(body_of(stream, audio, sequence))
            response = await http.post(ROUTE, json={**body, "wait_ms": 5000}, headers=headers)
            if response.status_code != 200:
                print(f"  warm-up: {response.status_code} {response.text[:200]}", file=sys.stderr)


def blank(target: str, store: str, audio: Audio, pace: str, latency_ms: int | None, sessions: int) -> Load:
    """A run's labels; `drive` fills in what was measured."""
    zero = Usage(0.0, 0.0, 0.0)
    return Load(target, store, audio.name, pace, latency_ms, sessions, ClientStats(), zero, zero)


# ------------------------------------------------------------------------------------------- the runs
def plan_for(args: argparse.Namespace, pace: str, sessions: int, watch: int) -> Plan:
    """Auto concurrency: 32 at max pace; at real-time pace every speaker may have one chunk in flight (browsers
    do not coordinate). Auto clients: one at max pace; at real-time pace enough for the offered chunks/s."""
    streams = 2 * sessions
    concurrency = args.concurrency or (streams if pace == "realtime" else 32)
    clients = args.clients
    if not clients:
        offered = streams / CHUNK_SECONDS
        clients = 1 if pace == "max" else max(1, min(os.cpu_count() or 1, math.ceil(offered / CLIENT_RATE)))
    return Plan(pace, args.seconds, max(1, concurrency), max(1, min(clients, streams)), watch)


async def bare_load(bare: Server, audio: Audio, pace: str, args: argparse.Namespace) -> Load:
    sessions = [(str(uuid.uuid4()), "bare") for _ in range(args.sessions)]
    await warm_up(bare, audio, (str(uuid.uuid4()), "bare"))
    label = blank("bare", "-", audio, pace, None, args.sessions)
    load = await drive(bare, audio, sessions, plan_for(args, pace, args.sessions, 0), label)
    load.problems = log_problems(bare.log)
    return load


async def bridge_load(
    bridge: Server, audio: Audio, pace: str, store: str, latency: int, args: argparse.Namespace
) -> Load:
    sessions = await create_sessions(bridge, args.sessions + 1)
    warm, timed = sessions[0], sessions[1:]
    await warm_up(bridge, audio, warm)
    watch = min(args.subscribers, len(timed))
    label = blank("bridge", store, audio, pace, latency, len(timed))
    load = await drive(bridge, audio, timed, plan_for(args, pace, len(timed), watch), label)
    load.problems = log_problems(bridge.log)
    return load


async def with_bridge(
    store: str, latency: int, args: argparse.Namespace, tmp: Path, extra: list[str]
) -> tuple[Server, str | None]:
    """A started bridge and its scratch DB; the caller stops it with `release`."""
    dsn: str | None = None
    if store == "postgres":
        dsn = await scratch_database(args.database_url)
        CLEANUP.databases[dsn] = args.database_url
    try:
        return await start_bridge(store, dsn, latency, args, tmp, extra), dsn
    except BaseException:
        await release(None, dsn, args)
        raise


async def release(server: Server | None, dsn: str | None, args: argparse.Namespace) -> None:
    if server is not None:
        await stop_server(server)
        if server.realtime is not None:
            server.realtime.close()
    if dsn is not None:
        with contextlib.suppress(Exception):
            await drop_database(args.database_url, dsn)
        CLEANUP.databases.pop(dsn, None)


async def matrix(args: argparse.Namespace, extra: list[str]) -> list[Load]:
    """Every (store, latency) bridge x format x pace, each beside the bare app under the same load."""
    audios = {name: load_audio(name) for name in split(args.formats)}
    loads: list[Load] = []
    bare_by: dict[tuple[str, str], Load] = {}
    with scratch_dir() as tmp:
        bare = await start_bare(tmp)
        try:
            for store in split(args.stores):
                for latency in [int(v) for v in split(args.latency_ms)]:
                    try:
                        bridge, dsn = await with_bridge(store, latency, args, tmp, extra)
                    except Exception as exc:
                        print(f"{store}: skipped, the bridge could not start ({type(exc).__name__}: {exc})")
                        continue
                    try:
                        for audio in audios.values():
                            for pace in split(args.pace):
                                key = (audio.name, pace)
                                if key not in bare_by:
                                    bare_by[key] = await bare_load(bare, audio, pace, args)
                                    report(bare_by[key])
                                    loads.append(bare_by[key])
                                load = await bridge_load(bridge, audio, pace, store, latency, args)
                                load.bare_rate = bare_by[key].rate
                                report(load)
                                loads.append(load)
                    finally:
                        await release(bridge, dsn, args)
        finally:
            await stop_server(bare)
    return loads


def capacity_steps(args: argparse.Namespace) -> list[int]:
    if args.steps:
        return [int(v) for v in split(args.steps)]
    steps = [n for n in (100, 250, 500) if n < args.max_interviews]
    steps += list(range(750, args.max_interviews, 250))
    return [*steps, args.max_interviews]


async def capacity(args: argparse.Namespace, extra: list[str]) -> list[Load]:
    """Real-time pace, 500 ms engine: a fresh bridge per step, until response p99 leaves the budget."""
    audio = load_audio(split(args.formats)[0])
    store = split(args.stores)[0]
    loads: list[Load] = []
    with scratch_dir() as tmp:
        for interviews in capacity_steps(args):
            bridge, dsn = await with_bridge(store, CAPACITY_LATENCY_MS, args, tmp, extra)
            try:
                step = argparse.Namespace(**{**vars(args), "sessions": interviews})
                load = await bridge_load(bridge, audio, "realtime", store, CAPACITY_LATENCY_MS, step)
            finally:
                await release(bridge, dsn, args)
            report(load)
            loads.append(load)
            if not within_budget(load) and not args.all_steps:
                break
    return loads


def within_budget(load: Load) -> bool:
    """Both halves of the bridge's overhead under budget at p99: the answer to a chunk, and the line on a
    subscriber's screen after the speaker's latest chunk, less the engine's own 500 ms."""
    entry_overhead = load.c(99) - CAPACITY_LATENCY_MS
    return load.p(99) < BUDGET_MS and not math.isnan(entry_overhead) and entry_overhead < BUDGET_MS


# -------------------------------------------------------------------------------------------- printing
def ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}" if value >= 100 else f"{value:.1f}"


def clients_cell(load: Load) -> str:
    c = load.client
    busy = 100 * c.cpu_s / c.wall_s if c.wall_s else 0.0
    flag = " BOUND" if load.client_bound else ""
    return f"{c.processes}p {busy:.0f}% lag{ms(pct(c.loop_lag, 99))}{flag}"


def row(load: Load) -> list[str]:
    """One run as table cells (shared by the text table and the markdown one)."""
    wall = load.client.wall_s or 1.0
    ratio = f"{load.rate / load.bare_rate:.2f}" if load.bare_rate else "-"
    rss = f"{load.start.rss_mb:.0f}>{load.end.rss_mb:.0f} pk{load.end.peak_mb:.0f}"
    deliver = "-" if not load.watched else f"{len(load.deliveries)}: {ms(load.d(50))}/{ms(load.d(95))}/{ms(load.d(99))}"
    closest = "-" if not load.watched else f"{ms(load.c(50))}/{ms(load.c(95))}/{ms(load.c(99))}"
    return [
        load.target, load.store, load.audio, load.pace, "-" if load.latency_ms is None else str(load.latency_ms),
        str(load.sessions), f"{load.rate:.1f}", ratio, ms(load.p(50)), ms(load.p(95)), ms(load.p(99)),
        str(load.errors), f"{load.cpu_s:.1f} ({100 * load.cpu_s / wall:.0f}%)", rss, deliver, closest, clients_cell(load),
    ]  # fmt: skip


COLUMNS = [
    "run", "store", "fmt", "pace", "lat ms", "sess", "chunks/s", "ratio", "p50 ms", "p95 ms", "p99 ms", "err",
    "srv CPU s (%)", "RSS MB start>end", "entry n: p50/p95/p99 ms", "latest-send entry ms", "client",
]  # fmt: skip


def report(load: Load) -> None:
    """A line as each run ends, with what the table leaves out: answer statuses, error samples, server log."""
    cells = dict(zip(COLUMNS, row(load), strict=True))
    head = " ".join(f"{k}={v}" for k, v in cells.items() if k not in ("run", "client"))
    print(f"- {load.target}: {head}", flush=True)
    extra = f"statuses {load.client.statuses} client {cells['client']}"
    if load.client.behind:
        extra += f" sent-late p99 {ms(pct(load.client.behind, 99))} ms"
    if load.unmatched:
        extra += f" unmatched entries {load.unmatched}"
    print(f"    {extra}", flush=True)
    trend = rss_trend(RSS_SAMPLES)
    if trend and load.target == "bridge":
        print(f"    {trend}", flush=True)
    for sample in load.client.samples:
        print(f"    error: {sample}", flush=True)
    if load.problems:
        print(f"    server log: {len(load.problems)} warning/error lines, e.g. {load.problems[0][:200]}", flush=True)


def table(rows: list[list[str]], columns: list[str]) -> str:
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def markdown(rows: list[list[str]], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


CAPACITY_COLUMNS = [
    "interviews", "offered/s", "chunks/s", "resp p50 ms", "resp p99 ms", "entries", "POST>entry p99 ms",
    "minus engine ms", "latest-send p99 ms", "latest minus engine ms", "err", "srv CPU %", "client", "verdict",
]  # fmt: skip


def capacity_row(load: Load) -> list[str]:
    wall = load.client.wall_s or 1.0
    over, closest = load.d(99) - CAPACITY_LATENCY_MS, load.c(99) - CAPACITY_LATENCY_MS
    verdict = "ok" if within_budget(load) else "over"
    return [
        str(load.sessions), f"{load.sessions * 2 / CHUNK_SECONDS:.0f}", f"{load.rate:.1f}", ms(load.p(50)),
        ms(load.p(99)), str(len(load.deliveries)), ms(load.d(99)), ms(over), ms(load.c(99)), ms(closest),
        str(load.errors),
        f"{100 * load.cpu_s / wall:.0f}", clients_cell(load), verdict,
    ]  # fmt: skip


def print_summary(loads: list[Load], args: argparse.Namespace) -> None:
    if not loads:
        print("no runs completed")
        return
    if args.capacity:
        rows = [capacity_row(load) for load in loads]
        columns = CAPACITY_COLUMNS
    else:
        rows = [row(load) for load in loads]
        columns = COLUMNS
    print("\n" + table(rows, columns) + "\n")
    print(markdown(rows, columns) + "\n")
    if args.capacity:
        fits = [load.sessions for load in loads if within_budget(load)]
        best = f"{max(fits)} interviews" if fits else "none of the steps"
        print(f"largest step with response p99 and entry overhead p99 both < {BUDGET_MS:.0f} ms: {best}")
    if any(load.client_bound for load in loads):
        print("BOUND: a client process was saturated (CPU > 90% or loop lag p99 > 50 ms): raise --clients")
    print(
        "ratio: bridge chunks/s / bare chunks/s under the same load; client: processes, busiest process CPU,"
        " event-loop lag p99 ms; entry: POST of the entry's last_sequence chunk -> transcript_entry at a subscriber;"
        " latest-send: from the speaker's latest chunk (seq >= last_sequence) sent before the entry arrived"
    )


# ------------------------------------------------------------------------------------------------ main
def split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--sessions", type=int, default=64, help="interviews, 2 speakers each (default 64)")
    add("--seconds", type=float, default=10.0, help="load time per run or capacity step (default 10)")
    add("--pace", default="max", help="max, realtime or both comma-separated (default max)")
    add("--concurrency", type=int, default=0, help="requests in flight at most (default: 32 max, all realtime)")
    add("--clients", type=int, default=0, help="client processes (default: auto)")
    add("--stores", default="sqlite,postgres")
    add("--formats", default="wav", help="wav, webm or both (default wav)")
    add("--latency-ms", default="0", help="simulate engine latencies, comma-separated (default 0)")
    add("--partials", choices=["on", "off"], default="off")
    add("--subscribers", type=int, default=20, help="sessions watched over realtime (default 20)")
    add("--workers", type=int, default=0, help="`serve --workers N`, only if serve has that option")
    add("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_PG)
    add("--capacity", action="store_true", help="step real-time interviews at 500 ms engine latency")
    add("--max-interviews", type=int, default=1000)
    add("--steps", default="", help="capacity steps, comma-separated (overrides --max-interviews)")
    add("--all-steps", action="store_true", help="capacity: go on past the first step over budget")
    add("--timeout", type=float, default=0.0, help="watchdog for the whole run in seconds (default: from the plan)")
    add("--profile", type=Path, metavar="DIR", help="py-spy flame graph of the bridge during each load, into DIR")
    add("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    add("--client-worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def watchdog_seconds(args: argparse.Namespace) -> float:
    """A generous bound from the plan: load time plus start-up, session creation and drain per run."""
    if args.timeout:
        return float(args.timeout)
    seconds = float(args.seconds)
    if args.capacity:
        return 120 + sum(seconds + 240 + n * 0.05 for n in capacity_steps(args))
    bridges = len(split(args.stores)) * len(split(args.latency_ms))
    runs = len(split(args.formats)) * len(split(args.pace)) * (1 + bridges)
    return 120 + runs * (seconds + 180 + int(args.sessions) * 0.05)


def bridge_extra(args: argparse.Namespace) -> list[str]:
    if not args.workers:
        return []
    if "--workers" in serve_options():
        return ["--workers", str(args.workers)]
    print(f"note: `interview-bridge serve` has no --workers option; --workers {args.workers} is not passed")
    return []


def describe(args: argparse.Namespace) -> None:
    if args.capacity:
        steps = ",".join(str(n) for n in capacity_steps(args))
        print(
            f"capacity: real-time pace, simulate latency {CAPACITY_LATENCY_MS} ms, store {split(args.stores)[0]},"
            f" format {split(args.formats)[0]}, steps {steps} interviews, {args.seconds:g} s each, budget p99 <"
            f" {BUDGET_MS:.0f} ms, {os.cpu_count()} CPUs"
        )
        return
    print(
        f"{args.sessions} sessions x 2 speakers, pace {args.pace}, formats {args.formats}, stores {args.stores},"
        f" simulate latency {args.latency_ms} ms, {args.seconds:g} s per run, {os.cpu_count()} CPUs"
    )


def main() -> int:
    args = parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        PROFILE["dir"] = args.profile
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    if args.client_worker:
        job = Job.from_json(json.loads(sys.stdin.readline()))
        asyncio.run(client_main(job))
        return 0
    signal.signal(signal.SIGTERM, on_sigterm)
    raise_fd_limit()
    extra = bridge_extra(args)
    describe(args)
    timer = arm_watchdog(watchdog_seconds(args))
    try:
        runner = capacity if args.capacity else matrix
        loads = asyncio.run(runner(args, extra))
    except KeyboardInterrupt:
        print("\ninterrupted: servers and clients killed, scratch databases dropped", file=sys.stderr)
        return 130
    finally:
        timer.cancel()
        CLEANUP.kill()
        CLEANUP.drop()
    print_summary(loads, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
