"""Chunk throughput of the live path (simulate engine, zero latency) on SQLite and on Postgres.

    .venv/bin/python bench/throughput.py                                   # both stores, both modes
    .venv/bin/python bench/throughput.py --sessions 8 --seconds 15 --concurrency 16
    .venv/bin/python bench/throughput.py --stores postgres --modes http --database-url postgresql://...

N sessions x 2 speakers send real 2 s WAV chunks (the speech of tests/fixtures/live/two_sentences.flac, then
two chunks of silence, over and over), each speaker strictly in sequence, as a browser does, only without the
2 s wait. Every chunk goes the whole live path: base64, WAV parse, persisted, energy gate and Silero VAD,
utterance assembly in the store, and at each pause one (simulated, instant) transcription and an entry.

Two modes per store:
- `service`: `process_audio(request, session, live)` in this process, the function the route calls;
- `http`: a real `interview-bridge serve` process on 127.0.0.1 (rate limits off), driven by httpx.AsyncClient
  with at most `--concurrency` requests in flight; includes auth, JSON and the network stack.
Postgres: DATABASE_URL (or `--database-url`, else postgresql://postgres@127.0.0.1:5432/postgres) names the
server; the benchmark creates a scratch database there and drops it afterwards. Every run is time-bounded
(`--seconds` of load, plus a watchdog). Prints, per store and mode, chunks/s, latency p50/p95/p99 and the
speakers that rate would carry live (a live speaker sends one chunk per 2 s). Nothing here is asserted by tests.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncpg  # noqa: E402
import httpx  # noqa: E402
import numpy as np  # noqa: E402

from bridge.offline import split_chunks  # noqa: E402
from bridge.services import build_services  # noqa: E402
from functions.process_audio.models import ProcessAudioRequest  # noqa: E402
from functions.process_audio.service import process_audio  # noqa: E402
from shared.audio.decode import decode_chunk  # noqa: E402
from shared.audio.formats import inspect_chunk  # noqa: E402
from shared.broadcast.local import LocalHub  # noqa: E402
from shared.credentials import hash_api_key, new_api_key  # noqa: E402
from shared.models import Session, Tenant, utcnow  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.store.factory import create_store  # noqa: E402
from shared.stt.wavio import wav_bytes  # noqa: E402

SPEECH = ROOT / "tests" / "fixtures" / "live" / "two_sentences.flac"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
SECRET = "bench-session-token-secret-0123456789abcdef"
CHUNK_SECONDS = 2.0


def stream_chunks() -> list[str]:
    """One speaker's cycle as base64: the recording in 2 s WAV chunks, then 2 chunks of silence."""
    data = SPEECH.read_bytes()
    pcm = decode_chunk(data, inspect_chunk(data, None))
    speech = [wav_bytes(piece) for piece in split_chunks(pcm, CHUNK_SECONDS)]
    silence = wav_bytes(np.zeros(int(16_000 * CHUNK_SECONDS), dtype=np.float32))
    return [base64.b64encode(chunk).decode("ascii") for chunk in [*speech, silence, silence]]


@dataclass
class Result:
    store: str
    mode: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    elapsed: float = 0.0
    entries: int = 0

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else float("nan")

    def line(self) -> str:
        rate = len(self.latencies) / self.elapsed if self.elapsed else 0.0
        return (
            f"{self.store:<9} {self.mode:<8} {len(self.latencies):>7} {rate:>9.1f} {self.percentile(50):>8.1f}"
            f" {self.percentile(95):>8.1f} {self.percentile(99):>8.1f} {rate * CHUNK_SECONDS:>8.0f}"
            f" {self.entries:>8} {self.errors:>6}"
        )


HEADER = (
    f"{'store':<9} {'mode':<8} {'chunks':>7} {'chunks/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"
    f" {'speakers':>8} {'entries':>8} {'errors':>6}"
)


def settings_for(store: str, data_dir: Path, dsn: str | None) -> Settings:
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "store": store,
        "database_url": dsn,
        "broadcaster": "local",
        "stt_engine": "simulate",
        "simulate_latency_ms": 0,
        "partials": "off",
        "rate_limits": "off",
        "session_token_secret": SECRET,
    }
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


async def drive(
    result: Result, streams: list[tuple[str, str]], chunks: list[str], seconds: float, concurrency: int, send: Any
) -> None:
    """Every (session, speaker) stream sends its chunks in sequence until the time is up; at most `concurrency` in flight."""
    gate = asyncio.Semaphore(concurrency)
    deadline = time.monotonic() + seconds

    async def speaker(session_id: str, name: str, offset: int) -> None:
        seq = 0
        while time.monotonic() < deadline:
            body = {
                "session_id": session_id,
                "speaker": name,
                "sequence_number": seq,
                "audio_chunk": chunks[(seq + offset) % len(chunks)],
                "mime_type": "audio/wav",
            }
            async with gate:
                started = time.perf_counter()
                ok = await send(body)
                took = time.perf_counter() - started
            if ok:
                result.latencies.append(took)
            else:
                result.errors += 1
            seq += 1

    started = time.monotonic()
    await asyncio.gather(*(speaker(sid, name, i * 3) for i, (sid, name) in enumerate(streams)))
    result.elapsed = time.monotonic() - started


async def run_service(store: str, dsn: str | None, args: argparse.Namespace, chunks: list[str]) -> Result:
    """process_audio in this process, on a fresh store."""
    result = Result(store, "service")
    with tempfile.TemporaryDirectory(prefix="ib-bench-") as tmp:
        services = build_services(settings_for(store, Path(tmp), dsn), broadcaster=LocalHub())
        await services.start()
        try:
            tenant = Tenant(id=str(uuid.uuid4()), name="bench", created_at=utcnow())
            await services.store.create_tenant(tenant, hash_api_key(new_api_key()))
            sessions: dict[str, Session] = {}
            for _ in range(args.sessions + 1):
                session = Session.new(tenant.id)
                await services.store.create_session(session)
                sessions[session.id] = session
            warm, *timed = sessions

            async def send(body: dict[str, Any]) -> bool:
                request = ProcessAudioRequest.model_validate(body)
                try:
                    await process_audio(request, sessions[request.session_id], services.live)
                except Exception as exc:  # counted, and the run goes on
                    print(f"  error: {type(exc).__name__}: {exc}", file=sys.stderr)
                    return False
                return True

            for seq in range(3):  # load the VAD model and warm the store before timing
                await send({"session_id": warm, "speaker": "warm", "sequence_number": seq, "audio_chunk": chunks[seq]})
            streams = [(sid, name) for sid in timed for name in ("interviewer", "candidate")]
            async with asyncio.timeout(args.seconds + 120):
                await drive(result, streams, chunks, args.seconds, args.concurrency, send)
            for sid in timed:
                result.entries += len(await services.store.list_entries(sid))
        finally:
            await services.close()
    return result


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def run_http(store: str, dsn: str | None, args: argparse.Namespace, chunks: list[str]) -> Result:
    """A real `interview-bridge serve` process on loopback, driven over HTTP."""
    result = Result(store, "http")
    with tempfile.TemporaryDirectory(prefix="ib-bench-") as tmp:
        settings = settings_for(store, Path(tmp), dsn)
        setup = create_store(settings)  # migrate and make the tenant before the server starts
        await setup.start()
        api_key = new_api_key()
        await setup.create_tenant(
            Tenant(id=str(uuid.uuid4()), name="bench", created_at=utcnow()), hash_api_key(api_key)
        )
        await setup.close()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if k not in ("SUPABASE_URL", "OPENAI_API_KEY", "DATABASE_URL")}
        env.update(
            DATA_DIR=tmp, STORE=store, STT_ENGINE="simulate", SIMULATE_LATENCY_MS="0", PARTIALS="off",
            RATE_LIMITS="off", SESSION_TOKEN_SECRET=SECRET, BROADCASTER="local", HOST="127.0.0.1", PORT=str(port),
        )  # fmt: skip
        if dsn:
            env["DATABASE_URL"] = dsn
        binary = Path(sys.executable).parent / "interview-bridge"
        process = await asyncio.create_subprocess_exec(
            str(binary), "serve", "--engine", "simulate", "--host", "127.0.0.1", "--port", str(port),
            env=env, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        try:
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if (await http.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    if process.returncode is not None or time.monotonic() > deadline:
                        raise RuntimeError("the bridge did not start")
                    await asyncio.sleep(0.2)
                tokens: dict[str, str] = {}
                for _ in range(args.sessions + 1):
                    created = (
                        await http.post("/sessions", json={}, headers={"Authorization": f"Bearer {api_key}"})
                    ).json()
                    tokens[created["session"]["id"]] = created["token"]
                warm, *timed = tokens

                async def send(body: dict[str, Any]) -> bool:
                    try:
                        response = await http.post(
                            "/functions/v1/process-audio",
                            content=json.dumps(body),
                            headers={
                                "Authorization": f"Bearer {tokens[body['session_id']]}",
                                "Content-Type": "application/json",
                            },
                        )
                    except httpx.HTTPError as exc:
                        print(f"  error: {type(exc).__name__}: {exc}", file=sys.stderr)
                        return False
                    if response.status_code != 200:
                        print(f"  error: {response.status_code} {response.text[:200]}", file=sys.stderr)
                        return False
                    return True

                for seq in range(3):
                    await send(
                        {"session_id": warm, "speaker": "warm", "sequence_number": seq, "audio_chunk": chunks[seq]}
                    )
                streams = [(sid, name) for sid in timed for name in ("interviewer", "candidate")]
                async with asyncio.timeout(args.seconds + 120):
                    await drive(result, streams, chunks, args.seconds, args.concurrency, send)
                for sid in timed:
                    transcript = await http.get(
                        f"/sessions/{sid}/transcript", headers={"Authorization": f"Bearer {tokens[sid]}"}
                    )
                    result.entries += len(transcript.json()["entries"])
        finally:
            if process.returncode is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    await asyncio.wait_for(process.wait(), 30)
                except TimeoutError:
                    os.killpg(process.pid, signal.SIGKILL)
                    await process.wait()
    return result


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path=f"/{name}"))


async def scratch_database(admin_dsn: str) -> str:
    name = f"ib_bench_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(admin_dsn, name)


async def drop_database(admin_dsn: str, dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{urlsplit(dsn).path.lstrip("/")}" WITH (FORCE)')
    finally:
        await conn.close()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=8, help="sessions, each with 2 speakers (default 8)")
    parser.add_argument("--seconds", type=float, default=10.0, help="load time per store and mode (default 10)")
    parser.add_argument("--concurrency", type=int, default=16, help="chunks in flight at most (default 16)")
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--modes", default="service,http")
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL") or DEFAULT_PG)
    args = parser.parse_args()
    chunks = stream_chunks()
    print(
        f"{args.sessions} sessions x 2 speakers, {len(chunks)}-chunk cycle of real 2 s WAV chunks (speech, silence),"
        f" {args.concurrency} in flight, {args.seconds:.0f} s per run, {os.cpu_count()} CPUs",
        flush=True,
    )
    print(HEADER, flush=True)
    for store in args.stores.split(","):
        for mode in args.modes.split(","):
            dsn = await scratch_database(args.database_url) if store == "postgres" else None
            try:
                runner = run_service if mode == "service" else run_http
                result = await runner(store, dsn, args, chunks)
            finally:
                if dsn:
                    await drop_database(args.database_url, dsn)
            print(result.line(), flush=True)
    print("speakers: live speakers that rate carries (one 2 s chunk per speaker every 2 s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
