"""A soak: the bridge as a real server process for a long time at half its measured capacity, a fault every minute,
and at the end the counts that must stay at zero.

    .venv/bin/python bench/soak.py                        # 30 minutes, 125 interviews, openai engine against a stub
    .venv/bin/python bench/soak.py --minutes 3            # a short check
    .venv/bin/python bench/soak.py --engine simulate      # the simulated engine (it cannot fail: no engine outages)

Load: `--sessions` interviews x 2 speakers (default 125: half of the 250 that one worker carries on SQLite at real-time
pace, docs/benchmarks.md), each speaker posting one 2 s WAV chunk every 2 s in sequence order (bench/load.py's
cycle: two_sentences.flac, then two chunks of silence; each speaker starts at its own place in it), each chunk sent
until it gets an answer, as the browser client does. The sessions belong to `--tenants` tenants and last
`--session-minutes` (the first ones less, so that ends are spread out), then are ended and replaced. The server is
`interview-bridge serve` on SQLite, rate limits off; with `--engine stub` (default) it transcribes with the `openai`
engine against a stub of OpenAI's `POST /v1/audio/transcriptions` that this script runs (the simulated engine's
words, `--latency-ms` per call, as the capacity measurement's engine).

Faults, one every `--fault-every` s, in turn:
- kill: SIGKILL to the server's process group, then a restart on the same data dir and port;
- engine: the stub answers 429 (Retry-After: 1) and 500 in turn for `--outage-seconds` (not with --engine simulate);
- abort: `--fault-speakers` speakers send their next chunk first on a connection closed mid-body, or closed before the
  answer is read, then again as usual;
- replay: `--fault-speakers` speakers' already acknowledged chunks are sent again, 3 each: each must be answered
  200 `duplicate`;
- reorder: `--fault-speakers` speakers send their next 4 chunks in reverse order.
All along, every `--probe-every` s, each tenant tries another tenant's session (reads and writes, with its key and
with a session token of its own: never a 2xx) and sends one bad input from a list (a 4xx, never a 5xx).

At the end every session is ended, read and its transcript read, the server is stopped and the SQLite file read:
an acknowledged chunk is lost when it is not stored, marked failed, left pending, or holds speech that no entry of
its speaker covers; an entry is duplicated when it overlaps another of its speaker. Exit status 1 when a count
that must be zero is not. Nothing runs in CI: this is for a person, or the lead, to run and read.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

SCRIPT = Path(__file__).resolve()
REPO = SCRIPT.parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bench.load import (  # noqa: E402
    CLEANUP,
    ROUTE,
    SPEAKERS,
    Audio,
    Connection,
    Server,
    Stream,
    arm_watchdog,
    body_of,
    group_usage,
    raise_fd_limit,
    start_server,
    stop_server,
)
from bench.throughput import CHUNK_SECONDS, SECRET, free_port, settings_for, stream_chunks  # noqa: E402
from shared.audio.decode import decode_chunk  # noqa: E402
from shared.audio.formats import inspect_chunk  # noqa: E402
from shared.credentials import hash_api_key, new_api_key  # noqa: E402
from shared.models import Tenant, utcnow  # noqa: E402
from shared.store.factory import create_store  # noqa: E402

MEASURED_CAPACITY = 250  # two-speaker interviews one worker carries on SQLite at real-time pace (docs/benchmarks.md)
KINDS = ("kill", "engine", "abort", "replay", "reorder")
SPEECH_RMS = 0.005  # a chunk louder than this holds speech (the cycle's silence is digital zero)
REQUEST_TIMEOUT_S = 60.0
REORDERED = 4  # chunks a reorder fault sends backwards
REPLAYS = 3  # acknowledged chunks a replay fault sends again, per speaker
CROSS_SEQUENCE = 900_000  # where a cross-tenant write would land: far past anything a speaker sends
RATE_LIMIT_BODY = {"error": {"message": "Rate limit reached for requests", "type": "requests", "param": None,
                             "code": "rate_limit_exceeded"}}  # fmt: skip
SERVER_ERROR_BODY = {"error": {"message": "The server had an error while processing your request.",
                               "type": "server_error", "param": None, "code": None}}  # fmt: skip


# ------------------------------------------------------------------------------------------ the stub engine
def serve_stub(port: int, latency_ms: int) -> None:
    """OpenAI's transcription endpoint, healthy (the simulated engine's words after `latency_ms`) or, after
    `POST /control/outage {"seconds"}`, down for that long: 429 with Retry-After and 500 in turn."""
    import uvicorn
    from litestar import Litestar, Request, Response, get, post

    from shared.stt.simulate import SimulatedTranscriber

    words = SimulatedTranscriber(latency_ms)
    state = {"until": 0.0, "refused": 0, "answered": 0}

    @post("/v1/audio/transcriptions", status_code=200)
    async def transcriptions(request: Request[Any, Any, Any]) -> Response[Any]:
        if time.monotonic() < state["until"]:
            state["refused"] += 1
            if state["refused"] % 2:
                return Response(RATE_LIMIT_BODY, status_code=429, headers={"retry-after": "1"})
            return Response(SERVER_ERROR_BODY, status_code=500)
        form = await request.form()
        upload = form["file"]
        audio = await upload.read() if hasattr(upload, "read") else bytes(upload)
        pcm = decode_chunk(audio, inspect_chunk(audio, "audio/wav"))
        text = (await words.transcribe(pcm)).text
        duration = round(len(pcm) / 16_000, 3)
        segment = {"id": 0, "seek": 0, "start": 0.0, "end": duration, "text": f" {text}", "tokens": [],
                   "temperature": 0.0, "avg_logprob": -0.1, "compression_ratio": 1.0, "no_speech_prob": 0.0}  # fmt: skip
        state["answered"] += 1
        body = {"task": "transcribe", "language": "english", "duration": duration, "text": text, "segments": [segment]}
        return Response(body)

    @post("/control/outage", status_code=200)
    async def outage(request: Request[Any, Any, Any]) -> dict[str, float]:
        state["until"] = time.monotonic() + float((await request.json())["seconds"])
        return state

    @get("/control/stats")
    async def stats() -> dict[str, float]:
        return state

    @get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    app = Litestar(
        route_handlers=[transcriptions, outage, stats, health],
        logging_config=None,
        signature_namespace={"Request": Request, "Response": Response},  # imported here, not at module level
    )
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


# ------------------------------------------------------------------------------------------------- state
@dataclass
class Speaker:
    name: str
    offset: int  # where in the audio cycle this speaker starts
    phase_s: float  # when in the first 2 s its first chunk leaves
    acked: set[int] = field(default_factory=set)
    next: int = 0  # the next sequence number to send
    reorder: int = 0  # a reorder fault: send the next this many chunks backwards
    abort: str | None = None  # an abort fault: "mid-body" or "unread", for the next chunk


@dataclass
class Live:
    """One interview, from its creation until it is ended."""

    id: str
    token: str
    tenant: int
    started: float
    ends_at: float
    speakers: dict[str, Speaker]
    ended: bool = False


@dataclass
class Counts:
    inputs: Counter[str] = field(default_factory=Counter)  # requests sent, by kind
    faults: Counter[str] = field(default_factory=Counter)
    answers: Counter[str] = field(default_factory=Counter)  # 2xx chunk answers by status
    no_answer: Counter[str] = field(default_factory=Counter)  # chunk requests that got none (then sent again)
    retried_5xx: Counter[int] = field(default_factory=Counter)  # 5xx/408/429 on good chunks (then sent again)
    refused: list[str] = field(default_factory=list)  # other 4xx on good chunks
    replays_wrong: list[str] = field(default_factory=list)  # a replay not answered 200 duplicate
    cross_tries: int = 0
    cross_breaches: list[str] = field(default_factory=list)
    bad_tries: int = 0
    bad_5xx: list[str] = field(default_factory=list)
    bad_accepted: list[str] = field(default_factory=list)  # a bad input answered 2xx (reported, not fatal)
    restarts: list[float] = field(default_factory=list)  # s from SIGKILL to healthy again


class Soak:
    def __init__(self, args: argparse.Namespace, data_dir: Path) -> None:
        self.args = args
        self.data_dir = data_dir
        self.rng = random.Random(args.seed)
        self.counts = Counts()
        cycle = stream_chunks()
        self.audio = Audio("wav", "audio/wav", cycle)
        self.speech = [rms(base64.b64decode(chunk)) > SPEECH_RMS for chunk in cycle]
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: Server | None = None
        self.stub: Server | None = None
        self.keys: list[str] = []
        self.probes: list[Live] = []  # one session per tenant that takes the bad inputs
        self.sessions: list[Live] = []
        self.started = time.monotonic()
        self.ends_at = self.started + args.minutes * 60

    def live(self, tenant: int | None = None, *, margin_s: float = 0.0) -> list[Live]:
        now = time.monotonic()
        return [
            s for s in self.sessions
            if not s.ended and s.ends_at - now > margin_s and (tenant is None or s.tenant == tenant)
        ]  # fmt: skip

    def clock(self) -> str:
        seconds = int(time.monotonic() - self.started)
        return f"{seconds // 60:02d}:{seconds % 60:02d}"


def rms(wav: bytes) -> float:
    pcm = decode_chunk(wav, inspect_chunk(wav, "audio/wav"))
    return float(np.sqrt(np.mean(np.square(pcm)))) if len(pcm) else 0.0


# ---------------------------------------------------------------------------------------------- servers
def bridge_env(soak: Soak) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SUPABASE_URL", "OPENAI_API_KEY", "DATABASE_URL")}
    env.update(
        DATA_DIR=str(soak.data_dir), STORE="sqlite", BROADCASTER="local", RATE_LIMITS="off", PARTIALS="off",
        SESSION_TOKEN_SECRET=SECRET, HOST="127.0.0.1", PORT=str(soak.port),
    )  # fmt: skip
    if soak.args.engine == "stub":
        assert soak.stub is not None
        env.update(STT_ENGINE="openai", OPENAI_API_KEY="sk-soak-stub", OPENAI_BASE_URL=f"{soak.stub.url}/v1")
    else:
        env.update(STT_ENGINE="simulate", SIMULATE_LATENCY_MS=str(soak.args.latency_ms))
    return env


async def start_bridge(soak: Soak) -> None:
    binary = Path(sys.executable).parent / "interview-bridge"
    engine = "openai" if soak.args.engine == "stub" else "simulate"
    command = [str(binary), "serve", "--engine", engine, "--host", "127.0.0.1", "--port", str(soak.port)]
    soak.server = await start_server("bridge", command, bridge_env(soak), soak.port, soak.data_dir / "serve.log")


async def make_tenants(soak: Soak) -> None:
    """Migrate and create the tenants before the server starts, as bench/load.py does."""
    setup = create_store(settings_for("sqlite", soak.data_dir, None))
    await setup.start()
    for index in range(soak.args.tenants):
        key = new_api_key()
        tenant = Tenant(id=str(uuid.uuid4()), name=f"soak-{index}", created_at=utcnow())
        await setup.create_tenant(tenant, hash_api_key(key))
        soak.keys.append(key)
    await setup.close()


# ---------------------------------------------------------------------------------------------- clients
async def answered(http: httpx.AsyncClient, soak: Soak, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """A request sent until it gets an answer that is not a 5xx (a kill may be under way)."""
    delay = 0.25
    while True:
        try:
            response = await http.request(method, f"{soak.url}{path}", **kwargs)
            if response.status_code < 500:
                return response
        except httpx.TransportError:
            pass
        await asyncio.sleep(delay)
        delay = min(2.0, delay * 2)


async def open_session(soak: Soak, http: httpx.AsyncClient, tenant: int, minutes: float, speakers: list[str]) -> Live:
    created = await answered(
        http, soak, "POST", "/sessions", json={"speakers": speakers}, headers=bearer(soak.keys[tenant])
    )
    created.raise_for_status()
    body = created.json()
    now = time.monotonic()
    voices = {
        name: Speaker(name, soak.rng.randrange(len(soak.audio.cycle)), soak.rng.uniform(0, 2)) for name in speakers
    }
    return Live(body["session"]["id"], body["token"], tenant, now, min(soak.ends_at, now + minutes * 60), voices)


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


async def deliver(soak: Soak, live: Live, speaker: Speaker, connection: Connection, sequence: int) -> None:
    """One chunk, sent until it gets an answer, as the browser client does."""
    stream = Stream(live.id, speaker.name, live.token, speaker.offset, speaker.phase_s, False)
    body = body_of(stream, soak.audio, sequence)
    if speaker.abort is not None:
        await abort(soak, live, body, speaker.abort)
        speaker.abort = None
    delay = 0.25
    while True:
        soak.counts.inputs["chunk"] += 1
        try:
            status, answer = await asyncio.wait_for(connection.post(live.token, body), REQUEST_TIMEOUT_S)
        except (OSError, asyncio.IncompleteReadError, ValueError, TimeoutError) as exc:
            connection.close()
            soak.counts.no_answer[type(exc).__name__] += 1
        else:
            if status // 100 == 2:
                speaker.acked.add(sequence)
                soak.counts.answers[str(json.loads(answer)["status"])] += 1
                return
            if status < 500 and status not in (408, 429):
                soak.counts.refused.append(f"{live.id}/{speaker.name}/{sequence}: {status} {answer[:160]!r}")
                return
            soak.counts.retried_5xx[status] += 1
        await asyncio.sleep(delay)
        delay = min(2.0, delay * 2)


async def abort(soak: Soak, live: Live, body: bytes, how: str) -> None:
    """A broken client connection: the request cut off mid-body, or sent whole and the answer never read."""
    soak.counts.inputs["aborted"] += 1
    connection = Connection(soak.url)
    head = connection.head(live.token, len(body))
    with contextlib.suppress(OSError):
        _, writer = await asyncio.open_connection(connection.host, connection.port)
        writer.write(head + (body[: len(body) // 2] if how == "mid-body" else body))
        await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def speak(soak: Soak, live: Live, speaker: Speaker) -> None:
    """A speaker's chunks at real-time pace in sequence order (a reorder fault sends a few backwards)."""
    connection = Connection(soak.url)
    try:
        while True:
            due = live.started + speaker.phase_s + speaker.next * CHUNK_SECONDS
            if due >= live.ends_at:
                return
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            batch = [speaker.next]
            if speaker.reorder:
                batch = list(range(speaker.next + speaker.reorder - 1, speaker.next - 1, -1))
                speaker.reorder = 0
            for sequence in batch:
                await deliver(soak, live, speaker, connection, sequence)
            speaker.next += len(batch)
    finally:
        connection.close()


async def slot(soak: Soak, http: httpx.AsyncClient, index: int) -> None:
    """Interviews back to back in one slot until the soak is over; the first is shorter, to spread the ends."""
    minutes = soak.args.session_minutes * soak.rng.uniform(0.2, 1.0)
    while time.monotonic() < soak.ends_at - 5:
        live = await open_session(soak, http, index % soak.args.tenants, minutes, list(SPEAKERS))
        soak.sessions.append(live)
        await asyncio.gather(*(speak(soak, live, speaker) for speaker in live.speakers.values()))
        live.ended = True
        ended = await answered(http, soak, "POST", f"/sessions/{live.id}/end", headers=bearer(live.token))
        if ended.status_code != 200:
            soak.counts.refused.append(f"end {live.id}: {ended.status_code} {ended.text[:160]}")
        minutes = soak.args.session_minutes


# ------------------------------------------------------------------------------------------------ faults
async def inject_faults(soak: Soak, http: httpx.AsyncClient) -> None:
    kinds = [k for k in KINDS if k != "engine" or soak.args.engine == "stub"]
    for n in itertools.count():
        at = soak.started + (n + 1) * soak.args.fault_every
        if at >= soak.ends_at - 10:
            return
        await asyncio.sleep(at - time.monotonic())
        kind = kinds[n % len(kinds)]
        note = await FAULTS[kind](soak, http)
        soak.counts.faults[kind] += 1
        assert soak.server is not None
        usage = group_usage(soak.server.process.pid)
        acked = sum(soak.counts.answers.values())
        print(
            f"  [{soak.clock()}] {kind}: {note}; {acked:,} chunks acknowledged so far, server RSS {usage.rss_mb:.0f} MB"
        )


async def kill(soak: Soak, http: httpx.AsyncClient) -> str:
    assert soak.server is not None
    pid = soak.server.process.pid
    killed = time.monotonic()
    os.killpg(pid, signal.SIGKILL)
    await soak.server.process.wait()
    CLEANUP.groups.discard(pid)
    await start_bridge(soak)
    soak.counts.restarts.append(time.monotonic() - killed)
    return f"SIGKILL, healthy again after {soak.counts.restarts[-1]:.1f} s"


async def engine_outage(soak: Soak, http: httpx.AsyncClient) -> str:
    assert soak.stub is not None
    seconds = soak.args.outage_seconds
    (await http.post(f"{soak.stub.url}/control/outage", json={"seconds": seconds})).raise_for_status()
    return f"the engine answers 429 and 500 for {seconds:g} s"


def fault_speakers(soak: Soak, margin_s: float) -> list[tuple[Live, Speaker]]:
    pairs = [(live, speaker) for live in soak.live(margin_s=margin_s) for speaker in live.speakers.values()]
    return soak.rng.sample(pairs, min(soak.args.fault_speakers, len(pairs)))


async def aborts(soak: Soak, http: httpx.AsyncClient) -> str:
    chosen = fault_speakers(soak, 10)
    for n, (_, speaker) in enumerate(chosen):
        speaker.abort = "mid-body" if n % 2 == 0 else "unread"
    return f"{len(chosen)} speakers' next chunk goes first on a connection cut mid-body or before the answer"


async def replays(soak: Soak, http: httpx.AsyncClient) -> str:
    chosen = [(live, s) for live, s in fault_speakers(soak, 30) if len(s.acked) >= REPLAYS]

    async def replay(live: Live, speaker: Speaker) -> None:
        for sequence in soak.rng.sample(sorted(speaker.acked), REPLAYS):
            stream = Stream(live.id, speaker.name, live.token, speaker.offset, speaker.phase_s, False)
            body = body_of(stream, soak.audio, sequence)
            soak.counts.inputs["replay"] += 1
            headers = {**bearer(live.token), "Content-Type": "application/json"}
            answer = await answered(http, soak, "POST", ROUTE, content=body, headers=headers)
            status = answer.json().get("status") if answer.status_code == 200 else None
            if status != "duplicate":
                soak.counts.replays_wrong.append(f"{live.id}/{speaker.name}/{sequence}: {answer.status_code} {status}")

    await asyncio.gather(*(replay(live, speaker) for live, speaker in chosen))
    return f"{len(chosen) * REPLAYS} acknowledged chunks of {len(chosen)} speakers sent again"


async def reorders(soak: Soak, http: httpx.AsyncClient) -> str:
    chosen = fault_speakers(soak, 20)
    for _, speaker in chosen:
        speaker.reorder = REORDERED
    return f"{len(chosen)} speakers send their next {REORDERED} chunks backwards"


FAULTS = {"kill": kill, "engine": engine_outage, "abort": aborts, "replay": replays, "reorder": reorders}


# ------------------------------------------------------------------------------------------------ probes
def bad_inputs(soak: Soak, live: Live, probe: Live, n: int) -> list[tuple[str, str, str, dict[str, str], bytes]]:
    """(name, method, path, headers, body) of inputs a client may send by mistake or on purpose; all must be 4xx."""
    token, chunk = probe.token, soak.audio.cycle[0]

    def chunk_json(**fields: Any) -> bytes:
        body = {"session_id": probe.id, "speaker": "probe", "sequence_number": 1_000 + n, "audio_chunk": chunk,
                "mime_type": "audio/wav"}  # fmt: skip
        body.update(fields)
        return json.dumps({k: v for k, v in body.items() if v is not None}).encode()

    json_headers = {**bearer(token), "Content-Type": "application/json"}
    garbage = base64.b64encode(bytes(soak.rng.randrange(256) for _ in range(4096))).decode()
    truncated = base64.b64encode(base64.b64decode(chunk)[:30]).decode()
    other_audio = base64.b64encode(base64.b64decode(soak.audio.cycle[1])).decode()
    return [
        ("invalid JSON", "POST", ROUTE, json_headers, b'{"session_id": '),
        ("a JSON array", "POST", ROUTE, json_headers, b"[]"),
        ("an empty body", "POST", ROUTE, json_headers, b""),
        ("no audio_chunk", "POST", ROUTE, json_headers, chunk_json(audio_chunk=None)),
        ("audio_chunk not base64", "POST", ROUTE, json_headers, chunk_json(audio_chunk="@@not base64@@")),
        ("a negative sequence_number", "POST", ROUTE, json_headers, chunk_json(sequence_number=-1)),
        ("sequence_number as text", "POST", ROUTE, json_headers, chunk_json(sequence_number="7")),
        ("sequence_number past the limit", "POST", ROUTE, json_headers, chunk_json(sequence_number=2**63)),
        ("wait_ms past the limit", "POST", ROUTE, json_headers, chunk_json(wait_ms=10**9)),
        ("random bytes as audio/wav", "POST", ROUTE, json_headers, chunk_json(audio_chunk=garbage)),
        ("a truncated WAV header", "POST", ROUTE, json_headers, chunk_json(audio_chunk=truncated)),
        ("an unknown mime_type", "POST", ROUTE, json_headers, chunk_json(audio_chunk=garbage, mime_type="audio/x-no")),
        ("an undeclared speaker", "POST", ROUTE, {**bearer(live.token), "Content-Type": "application/json"},
         json.dumps({"session_id": live.id, "speaker": "intruder", "sequence_number": 0, "audio_chunk": chunk,
                     "mime_type": "audio/wav"}).encode()),
        ("a stored sequence_number with other audio", "POST", ROUTE, json_headers,
         chunk_json(sequence_number=0, audio_chunk=other_audio)),
        ("no credential", "POST", ROUTE, {"Content-Type": "application/json"}, chunk_json()),
        ("a made-up credential", "POST", ROUTE, {**bearer("not-a-token"), "Content-Type": "application/json"},
         chunk_json()),
        ("an unknown session", "POST", ROUTE, json_headers, chunk_json(session_id=str(uuid.uuid4()))),
        ("a session_id that is not a uuid", "POST", ROUTE, json_headers, chunk_json(session_id="../../etc")),
        ("a transcript format that does not exist", "GET", f"/sessions/{probe.id}/transcript?format=pdf",
         bearer(token), b""),
        ("a body over MAX_BODY_BYTES", "POST", ROUTE, json_headers, b'{"audio_chunk": "' + b"A" * 10_000_004 + b'"}'),
    ]  # fmt: skip


def cross_tries(soak: Soak, own: Live, other: Live, n: int) -> list[tuple[str, str, str, dict[str, str], bytes]]:
    """(name, method, path, headers, body): a tenant's credentials against another tenant's session."""
    key = soak.keys[own.tenant]
    write = json.dumps({"session_id": other.id, "speaker": SPEAKERS[0], "sequence_number": CROSS_SEQUENCE + n,
                        "audio_chunk": soak.audio.cycle[0], "mime_type": "audio/wav"}).encode()  # fmt: skip
    as_json = {"Content-Type": "application/json"}
    return [
        ("read a session with a tenant key", "GET", f"/sessions/{other.id}", bearer(key), b""),
        ("read a session with a session token", "GET", f"/sessions/{other.id}", bearer(own.token), b""),
        ("read a transcript with a tenant key", "GET", f"/sessions/{other.id}/transcript", bearer(key), b""),
        ("read a transcript with a session token", "GET", f"/sessions/{other.id}/transcript", bearer(own.token), b""),
        ("write a chunk with a session token", "POST", ROUTE, {**bearer(own.token), **as_json}, write),
        ("write a chunk with a tenant key", "POST", ROUTE, {**bearer(key), **as_json}, write),
        ("end a session with a tenant key", "POST", f"/sessions/{other.id}/end", bearer(key), b""),
        ("a viewer token with a tenant key", "POST", f"/sessions/{other.id}/viewer-token", bearer(key), b""),
        ("list sessions with a tenant key", "GET", "/sessions?limit=100", bearer(key), b""),
    ]  # fmt: skip


async def send_probe(soak: Soak, http: httpx.AsyncClient, method: str, path: str, headers: dict[str, str],
                     body: bytes) -> httpx.Response | None:  # fmt: skip
    for _ in range(5):  # a kill may be under way: a probe with no answer is sent again, then dropped
        with contextlib.suppress(httpx.TransportError):
            return await http.request(method, f"{soak.url}{path}", headers=headers, content=body or None)
        await asyncio.sleep(1)
    return None


async def probe(soak: Soak, http: httpx.AsyncClient) -> None:
    for n in itertools.count():
        await asyncio.sleep(soak.args.probe_every)
        if time.monotonic() >= soak.ends_at - 5:
            return
        for tenant in range(soak.args.tenants):
            own, others = soak.live(tenant, margin_s=5), soak.live(margin_s=5)
            others = [s for s in others if s.tenant != tenant]
            if own and others:
                mine, other = soak.rng.choice(own), soak.rng.choice(others)
                tries = cross_tries(soak, mine, other, n)
                name, method, path, headers, body = tries[(n + tenant) % len(tries)]
                answer = await send_probe(soak, http, method, path, headers, body)
                if answer is not None:
                    soak.counts.inputs["cross-tenant"] += 1
                    soak.counts.cross_tries += 1
                    breach = answer.is_success and (not path.startswith("/sessions?") or other.id in answer.text)
                    if breach:
                        soak.counts.cross_breaches.append(f"{name}: {answer.status_code} {answer.text[:160]}")
                    if answer.status_code >= 500:
                        soak.counts.bad_5xx.append(f"cross-tenant, {name}: {answer.status_code} {answer.text[:160]}")
            if own:
                inputs = bad_inputs(soak, soak.rng.choice(own), soak.probes[tenant], n)
                name, method, path, headers, body = inputs[(n * soak.args.tenants + tenant) % len(inputs)]
                answer = await send_probe(soak, http, method, path, headers, body)
                if answer is not None:
                    soak.counts.inputs["bad input"] += 1
                    soak.counts.bad_tries += 1
                    if answer.status_code >= 500:
                        soak.counts.bad_5xx.append(f"{name}: {answer.status_code} {answer.text[:160]}")
                    elif answer.is_success:
                        soak.counts.bad_accepted.append(f"{name}: {answer.status_code} {answer.text[:120]}")


# ---------------------------------------------------------------------------------------------- the check
@dataclass
class Verdict:
    not_stored: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    left_pending: list[str] = field(default_factory=list)
    speech_missing: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    unsent_stored: list[str] = field(default_factory=list)  # stored chunks no client of the session sent
    wrong_next: list[str] = field(default_factory=list)
    entries: int = 0

    @property
    def lost(self) -> int:
        return len(self.not_stored) + len(self.failed) + len(self.left_pending) + len(self.speech_missing)


async def read_sessions(soak: Soak, http: httpx.AsyncClient) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    gate = asyncio.Semaphore(16)

    async def one(live: Live) -> tuple[str, tuple[dict[str, Any], dict[str, Any]]]:
        async with gate:
            read = await answered(http, soak, "GET", f"/sessions/{live.id}", headers=bearer(live.token))
            transcript = await answered(
                http, soak, "GET", f"/sessions/{live.id}/transcript", headers=bearer(live.token)
            )
        return live.id, (read.json(), transcript.json())

    return dict(await asyncio.gather(*(one(live) for live in soak.sessions)))


def stored_rows(data_dir: Path) -> dict[tuple[str, str], dict[int, str]]:
    """(session, speaker) -> {sequence: state}, read from the SQLite file once the server is stopped."""
    rows: dict[tuple[str, str], dict[int, str]] = {}
    with contextlib.closing(sqlite3.connect(data_dir / "bridge.sqlite3")) as db:
        for session_id, speaker, sequence, state in db.execute(
            "SELECT session_id, speaker, sequence_number, state FROM audio_chunks"
        ):
            rows.setdefault((session_id, speaker), {})[sequence] = state
    return rows


def verify(soak: Soak, read: dict[str, tuple[dict[str, Any], dict[str, Any]]], stored: dict[tuple[str, str], dict[int, str]]) -> Verdict:  # fmt: skip
    verdict = Verdict()
    for live in soak.sessions:
        session, transcript = read[live.id]
        entries = transcript["entries"]
        verdict.entries += len(entries)
        for name, speaker in live.speakers.items():
            where = f"{live.id}/{name}"
            states = stored.get((live.id, name), {})
            mine = sorted((e for e in entries if e["speaker"] == name), key=lambda e: e["first_sequence"])
            for before, after in itertools.pairwise(mine):
                if after["first_sequence"] < before["last_sequence"] or after["start_ms"] < before["end_ms"]:
                    verdict.duplicated.append(f"{where}: {before['text'][:40]!r} / {after['text'][:40]!r}")
            for sequence in sorted(speaker.acked):
                state = states.get(sequence)
                if state is None:
                    verdict.not_stored.append(f"{where}/{sequence}")
                elif state == "failed":
                    verdict.failed.append(f"{where}/{sequence}")
                elif state == "pending":
                    verdict.left_pending.append(f"{where}/{sequence}")
                speech = soak.speech[(sequence + speaker.offset) % len(soak.speech)]
                if speech and not any(e["first_sequence"] <= sequence <= e["last_sequence"] for e in mine):
                    verdict.speech_missing.append(f"{where}/{sequence}")
            verdict.unsent_stored += [f"{where}/{s}" for s in sorted(set(states) - speaker.acked)]
            expected = max(speaker.acked) + 1 if speaker.acked else None
            if session["next_sequence"].get(name) != expected:
                verdict.wrong_next.append(f"{where}: {session['next_sequence'].get(name)} != {expected}")
    return verdict


# ------------------------------------------------------------------------------------------------ the run
async def soak_run(soak: Soak) -> tuple[Verdict, float]:
    args = soak.args
    await make_tenants(soak)
    if args.engine == "stub":
        port = free_port()
        command = [sys.executable, str(SCRIPT), "--serve-stub", str(port), "--latency-ms", str(args.latency_ms)]
        soak.stub = await start_server("stub", command, dict(os.environ), port, soak.data_dir / "stub.log")
    await start_bridge(soak)
    soak.started = time.monotonic()
    soak.ends_at = soak.started + args.minutes * 60
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(timeout=REQUEST_TIMEOUT_S, limits=limits) as http:
        for tenant in range(args.tenants):  # each with a chunk 0, for the bad input that sends it other audio
            probe_session = await open_session(soak, http, tenant, args.minutes + 1, ["probe"])
            first = Stream(probe_session.id, "probe", probe_session.token, 0, 0.0, False)
            headers = {**bearer(probe_session.token), "Content-Type": "application/json"}
            await answered(http, soak, "POST", ROUTE, content=body_of(first, soak.audio, 0), headers=headers)
            soak.probes.append(probe_session)
        work = [slot(soak, http, index) for index in range(args.sessions)]
        await asyncio.gather(*work, inject_faults(soak, http), probe(soak, http))
        for probe_session in soak.probes:
            await answered(http, soak, "POST", f"/sessions/{probe_session.id}/end", headers=bearer(probe_session.token))
        elapsed = time.monotonic() - soak.started
        print(f"  [{soak.clock()}] load over; reading {len(soak.sessions)} sessions and their transcripts")
        read = await read_sessions(soak, http)
        if soak.stub is not None:
            with contextlib.suppress(httpx.HTTPError):
                stub = (await http.get(f"{soak.stub.url}/control/stats")).json()
                print(
                    f"  engine stub: {stub['answered']:,.0f} transcriptions, {stub['refused']:,.0f} refused in outages"
                )
    assert soak.server is not None
    await stop_server(soak.server)
    if soak.stub is not None:
        await stop_server(soak.stub)
    return verify(soak, read, stored_rows(soak.data_dir)), elapsed


def report(soak: Soak, verdict: Verdict, elapsed: float) -> int:
    c, args = soak.counts, soak.args
    acked = sum(c.answers.values())
    inputs = sum(c.inputs.values())
    errors, warnings = server_log(soak.data_dir / "serve.log")
    faults = ", ".join(f"{kind} {c.faults[kind]}" for kind in KINDS if c.faults[kind]) or "none"
    print(
        f"\nsoak: {elapsed / 60:.1f} min, {args.sessions} interviews x 2 speakers at a time ({len(soak.sessions)} in "
        f"all, {args.tenants} tenants), engine {engine_label(args)}, a fault every {args.fault_every:g} s"
    )
    print(f"inputs tried: {inputs:,} ({', '.join(f'{k} {v:,}' for k, v in sorted(c.inputs.items()))})")
    print(f"faults injected: {sum(c.faults.values())} ({faults})")
    restarts = f"; restarts took {', '.join(f'{s:.1f}' for s in c.restarts)} s" if c.restarts else ""
    print(
        f"chunks acknowledged: {acked:,} ({acked / elapsed:.1f}/s; "
        f"{', '.join(f'{k} {v:,}' for k, v in sorted(c.answers.items()))}); sent again after no answer "
        f"{sum(c.no_answer.values()):,}, after a 5xx/408/429 {sum(c.retried_5xx.values()):,}{restarts}"
    )
    print(
        f"acknowledged chunks lost: {verdict.lost} (not stored {len(verdict.not_stored)}, failed "
        f"{len(verdict.failed)}, left pending {len(verdict.left_pending)}, speech in no entry "
        f"{len(verdict.speech_missing)})"
    )
    print(f"entries duplicated: {len(verdict.duplicated)} (of {verdict.entries:,} entries)")
    print(
        f"cross-tenant reads or writes: {len(c.cross_breaches)} (of {c.cross_tries} tries); chunks stored that no "
        f"client of the session sent: {len(verdict.unsent_stored)}"
    )
    print(f"5xx on bad input: {len(c.bad_5xx)} (of {c.bad_tries} bad inputs and {c.cross_tries} cross-tenant tries)")
    print(
        f"replays not answered duplicate: {len(c.replays_wrong)}; good chunks refused: {len(c.refused)}; "
        f"next_sequence off: {len(verdict.wrong_next)}; bad inputs accepted: {len(c.bad_accepted)}; "
        f"server log errors: {len(errors)}, warnings: {sum(warnings.values())} "
        f"({', '.join(f'{k} {v}' for k, v in warnings.most_common())})"
    )
    details = {
        "not stored": verdict.not_stored, "failed": verdict.failed, "left pending": verdict.left_pending,
        "speech in no entry": verdict.speech_missing, "duplicated": verdict.duplicated,
        "cross-tenant": c.cross_breaches, "unsent stored": verdict.unsent_stored, "5xx on bad input": c.bad_5xx,
        "replays": c.replays_wrong, "refused": c.refused, "next_sequence": verdict.wrong_next,
        "bad input accepted": c.bad_accepted, "server log errors": errors,
    }  # fmt: skip
    for name, found in details.items():
        for line in found[:5]:
            print(f"  {name}: {line[:300]}")
    must_be_zero = [
        verdict.lost, len(verdict.duplicated), len(c.cross_breaches), len(verdict.unsent_stored), len(c.bad_5xx),
        len(c.replays_wrong), len(c.refused), len(verdict.wrong_next),
    ]  # fmt: skip
    return 1 if any(must_be_zero) else 0


def server_log(path: Path) -> tuple[list[str], Counter[str]]:
    """The server's error lines (and tracebacks), and its warnings counted by logger."""
    errors: list[str] = []
    warnings: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        try:
            record = json.loads(line)
        except ValueError:
            if "Traceback" in line:
                errors.append(line)
            continue
        level = record.get("level") if isinstance(record, dict) else None
        if level in ("error", "critical"):
            errors.append(line)
        elif level == "warning":
            warnings[str(record.get("logger"))] += 1
    return errors, warnings


def engine_label(args: argparse.Namespace) -> str:
    if args.engine == "stub":
        return f"openai against a local stub ({args.latency_ms} ms per call)"
    return f"simulate ({args.latency_ms} ms)"


def on_sigterm(signum: int, frame: object) -> NoReturn:
    raise KeyboardInterrupt


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--minutes", type=float, default=30.0, help="how long the load runs (default 30)")
    add("--sessions", type=int, default=MEASURED_CAPACITY // 2,
        help=f"interviews at a time, 2 speakers each (default {MEASURED_CAPACITY // 2}: half the measured capacity)")  # fmt: skip
    add("--tenants", type=int, default=2, help="tenants the interviews are split between (default 2)")
    add("--session-minutes", type=float, default=10.0, help="how long an interview lasts (default 10)")
    add("--engine", choices=["stub", "simulate"], default="stub")
    add("--latency-ms", type=int, default=500, help="the engine's time per call (default 500, as the capacity run)")
    add("--fault-every", type=float, default=60.0, help="seconds between faults (default 60)")
    add("--outage-seconds", type=float, default=20.0, help="how long an engine outage lasts (default 20)")
    add("--fault-speakers", type=int, default=32, help="speakers an abort, replay or reorder fault hits (default 32)")
    add("--probe-every", type=float, default=5.0, help="seconds between cross-tenant and bad-input tries (default 5)")
    add("--seed", type=int, default=20)
    add("--keep", action="store_true", help="keep the data dir (the SQLite file and the server's log)")
    add("--serve-stub", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.tenants < 2:
        parser.error("--tenants must be at least 2: each tenant tries another's sessions")
    return args


def main() -> int:
    args = parse_args()
    if args.serve_stub:
        serve_stub(args.serve_stub, args.latency_ms)
        return 0
    signal.signal(signal.SIGTERM, on_sigterm)
    raise_fd_limit()
    data_dir = Path(tempfile.mkdtemp(prefix="ib-soak-"))
    if not args.keep:
        CLEANUP.dirs.add(data_dir)
    print(
        f"soak: {args.minutes:g} min, {args.sessions} interviews x 2 speakers at real-time pace "
        f"({args.sessions / CHUNK_SECONDS * 2:.0f} chunks/s), engine {engine_label(args)}, faults every "
        f"{args.fault_every:g} s, data in {data_dir}"
    )
    timer = arm_watchdog(args.minutes * 60 + 900)
    soak = Soak(args, data_dir)
    try:
        verdict, elapsed = asyncio.run(soak_run(soak))
        return report(soak, verdict, elapsed)
    except KeyboardInterrupt:
        print("\ninterrupted: the server and the stub are killed", file=sys.stderr)
        return 130
    finally:
        timer.cancel()
        CLEANUP.kill()
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
