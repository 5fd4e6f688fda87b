"""SIGKILL under load: 16 interviews x 2 speakers post 2 s WAV chunks to a real server, which is killed midway and
restarted on the same data dir and port; the clients send again what got no answer.

The engine is `simulate` (shared/stt/simulate.py): its text is a hash of the samples it is given and their
duration, and it ignores the prompt, so two runs give the same transcript exactly when the same audio was cut
into the same utterances. That is what "the transcript equals a run without the crash" has to mean; a real model
would add nothing but CPU on 2 cores. Start times are left out of the comparison: a speaker's clock is placed by
when its first chunk arrived (by design), so they differ between any two runs; durations are compared.

Without the durability, this fails: were a chunk acknowledged before its store write (written behind, batched,
or held by the speaker's run), the chunks acknowledged by the killed server and not yet written are gone. The
store check names them; their speaker's stream has a hole that the assembler skips after its gap timeout, so its
utterances are cut and hashed differently and the transcript differs from the reference run; a lost speech chunk
is also uncovered by any entry. Tried on a scratch copy: acknowledging first and writing 50 ms later lost 16-19
acknowledged chunks per run, and the store check, the coverage check and the comparison each failed on its own; a
write merely moved to the next turn of the event loop was not caught (a window of microseconds, which no kill from
outside can be counted on to hit).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bridge.offline import split_chunks
from shared.stt.wavio import wav_bytes
from tests.faults.conftest import REPORTS
from tests.helpers import FIXTURES, bearer, load_pcm
from tests.test_graceful_shutdown import stored_chunks
from tests.test_server_process import BIN, base_env, free_port, server, wait_healthy

SESSIONS = 16
SPEAKERS = ("a", "b")
CLIPS = sorted((FIXTURES / "speech").glob("*.wav"))  # seven real voices; each session's speakers get two of them
REPEATS = 4  # each speaker says its clip this many times, a 2 s chunk of silence after each
SPEECH_RMS = 0.005  # a chunk louder than this holds speech (the clips' quietest speech chunk: 0.019)
LATENCY_MS = 50  # the simulated engine's, so that the kill finds transcriptions in flight
RETRY_S = 0.1
ROUTE = "/functions/v1/process-audio"

Key = tuple[int, str, int]  # (session index, speaker, sequence number)
Line = tuple[int, int, str, int]  # (first_sequence, last_sequence, text, end_ms - start_ms)


@dataclass(frozen=True)
class Voice:
    """What one speaker sends: base64 WAV chunks in sequence order, and which of them hold speech."""

    chunks: list[str]
    speech: list[bool]


def voice(clip: Path) -> Voice:
    silence = load_pcm(FIXTURES / "audio" / "silence_2s.wav")
    pieces = [*split_chunks(load_pcm(clip), 2.0), silence] * REPEATS
    return Voice(
        [base64.b64encode(wav_bytes(piece)).decode("ascii") for piece in pieces],
        [float(np.sqrt(np.mean(np.square(piece)))) > SPEECH_RMS for piece in pieces],
    )


def voices() -> dict[tuple[int, str], Voice]:
    made = {clip: voice(clip) for clip in CLIPS}
    return {(i, s): made[CLIPS[(i + 3 * k) % len(CLIPS)]] for i in range(SESSIONS) for k, s in enumerate(SPEAKERS)}


@dataclass
class Tally:
    acked: set[Key] = field(default_factory=set)  # chunks answered 2xx
    retried: int = 0  # requests sent again because the previous one got no answer (or a 5xx)
    duplicates: int = 0  # chunks sent again that the server had stored, answered `duplicate`
    refused: list[str] = field(default_factory=list)  # 4xx answers: none expected
    acked_before_kill: int = 0
    pending_at_kill: int = 0  # stored (so acknowledged) but not yet in an entry when the server died
    kill_at: int = 0  # acknowledged chunks after which the server is killed (0: never)
    halfway: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Outcome:
    tally: Tally
    sessions: dict[int, dict[str, Any]]  # GET /sessions/{id} after the end
    transcripts: dict[int, dict[str, Any]]  # GET /sessions/{id}/transcript after the end
    stored: set[Key]  # read from the SQLite file once the server is gone


class Bridge:
    """The server process of one run, killed and restarted on the same data dir and port when asked."""

    def __init__(self, root: Path, stack: ExitStack) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.port, self.data_dir = free_port(), root / "data"
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = root / "server.log"
        self.env = base_env(
            self.data_dir, self.port, STT_ENGINE="simulate", SIMULATE_LATENCY_MS=str(LATENCY_MS), RATE_LIMITS="off"
        )
        self.stack = stack
        self.process = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        serve = f"exec {shlex.quote(str(BIN / 'interview-bridge'))} serve 2>>{shlex.quote(str(self.log))}"
        process = self.stack.enter_context(server(["bash", "-c", serve], self.env))
        try:
            wait_healthy(self.url, process)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its log ends: {self.log.read_text()[-3000:]}") from exc
        return process

    def crash_and_restart(self) -> int:
        """SIGKILL, then a new server; returns how many stored chunks the killed one had not yet transcribed."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        with closing(sqlite3.connect(self.data_dir / "bridge.sqlite3")) as db:
            pending: int = db.execute("SELECT COUNT(*) FROM audio_chunks WHERE state = 'pending'").fetchone()[0]
        self.process = self.start()
        return pending


async def speak(client: httpx.AsyncClient, bridge: Bridge, key: tuple[int, str], session: dict[str, Any],
                said: Voice, tally: Tally) -> None:  # fmt: skip
    """One speaker's chunks in sequence order, each sent until it gets an answer."""
    index, speaker = key
    for sequence, chunk in enumerate(said.chunks):
        body = {"session_id": session["id"], "speaker": speaker, "sequence_number": sequence,
                "audio_chunk": chunk, "mime_type": "audio/wav"}  # fmt: skip
        sent_again = False
        while True:
            try:
                answer = await client.post(f"{bridge.url}{ROUTE}", json=body, headers=bearer(session["token"]))
                if answer.status_code < 500:
                    break
            except httpx.TransportError:
                pass
            tally.retried += 1
            sent_again = True
            await asyncio.sleep(RETRY_S)
        if not answer.is_success:
            tally.refused.append(f"{index}/{speaker}/{sequence}: {answer.status_code} {answer.text[:200]}")
            return
        tally.acked.add((index, speaker, sequence))
        if len(tally.acked) == tally.kill_at:
            tally.halfway.set()
        if sent_again and answer.json()["status"] == "duplicate":
            tally.duplicates += 1


async def kill_midway(bridge: Bridge, tally: Tally) -> None:
    await tally.halfway.wait()
    tally.acked_before_kill = len(tally.acked)
    tally.pending_at_kill = await asyncio.to_thread(bridge.crash_and_restart)


async def workload(bridge: Bridge, api_key: str, said: dict[tuple[int, str], Voice], crash: bool) -> Outcome:
    total = sum(len(v.chunks) for v in said.values())
    tally = Tally(kill_at=total // 2 if crash else 0)
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as client:
        sessions: dict[int, dict[str, Any]] = {}
        for index in range(SESSIONS):
            created = await client.post(
                f"{bridge.url}/sessions", json={"speakers": list(SPEAKERS)}, headers=bearer(api_key)
            )
            sessions[index] = {"id": created.json()["session"]["id"], "token": created.json()["token"]}
        posting = [speak(client, bridge, key, sessions[key[0]], said[key], tally) for key in said]
        await asyncio.gather(*posting, *([kill_midway(bridge, tally)] if crash else []))

        async def finish(index: int) -> tuple[dict[str, Any], dict[str, Any]]:
            base, auth = f"{bridge.url}/sessions/{sessions[index]['id']}", bearer(sessions[index]["token"])
            ended = await client.post(f"{base}/end", headers=auth)
            assert ended.status_code == 200, ended.text
            read = (await client.get(base, headers=auth)).json()
            return read, (await client.get(f"{base}/transcript", headers=auth)).json()

        done = await asyncio.gather(*(finish(index) for index in range(SESSIONS)))
    return Outcome(tally, {i: d[0] for i, d in enumerate(done)}, {i: d[1] for i, d in enumerate(done)}, set())


def run(root: Path, said: dict[tuple[int, str], Voice], *, crash: bool) -> Outcome:
    """The whole workload against a fresh bridge; with `crash`, SIGKILL and a restart once half is answered."""
    with ExitStack() as stack:
        bridge = Bridge(root, stack)
        create = [str(BIN / "interview-bridge"), "tenant", "create", "acme", "--data-dir", str(bridge.data_dir)]
        tenant = subprocess.run(create, env=bridge.env, check=True, capture_output=True, text=True)
        outcome = asyncio.run(workload(bridge, json.loads(tenant.stdout)["api_key"], said, crash))
        ids = {read["id"]: index for index, read in outcome.sessions.items()}
    stored = stored_chunks(bridge.data_dir)
    outcome.stored = {(ids[session_id], speaker, sequence) for session_id, speaker, sequence in stored}
    return outcome


def lines(transcript: dict[str, Any]) -> dict[str, list[Line]]:
    """Each speaker's entries as a user reads them, in spoken order."""
    by_speaker: dict[str, list[Line]] = {speaker: [] for speaker in SPEAKERS}
    for entry in transcript["entries"]:
        line = (entry["first_sequence"], entry["last_sequence"], entry["text"], entry["end_ms"] - entry["start_ms"])
        by_speaker[entry["speaker"]].append(line)
    return {speaker: sorted(found) for speaker, found in by_speaker.items()}


def overlaps(transcript: dict[str, Any]) -> Iterator[str]:
    """Entries of one speaker that overlap: one stretch of audio written twice. Neighbours may share the chunk
    where one utterance ends and the next begins, never more, and never a moment of audio."""
    for speaker in SPEAKERS:
        found = sorted((e for e in transcript["entries"] if e["speaker"] == speaker), key=lambda e: e["first_sequence"])
        for before, after in pairwise(found):
            same_audio = after["start_ms"] < before["end_ms"] or after["first_sequence"] < before["last_sequence"]
            if same_audio or after["first_sequence"] == before["first_sequence"]:
                yield f"{speaker}: {before['text']!r} and {after['text']!r}"


def uncovered(outcome: Outcome, said: dict[tuple[int, str], Voice]) -> list[Key]:
    """Acknowledged chunks with speech that no entry of their speaker covers."""
    missing = []
    for index, speaker, sequence in sorted(outcome.tally.acked):
        if not said[index, speaker].speech[sequence]:
            continue
        ranges = [(first, last) for first, last, _, _ in lines(outcome.transcripts[index])[speaker]]
        if not any(first <= sequence <= last for first, last in ranges):
            missing.append((index, speaker, sequence))
    return missing


def test_a_server_killed_under_load_loses_no_acknowledged_chunk_and_transcribes_as_if_never_killed(
    tmp_path: Path,
) -> None:
    """SIGKILL while 16 sessions x 2 speakers post, a restart, the clients' retries: every acknowledged chunk is
    stored and in the transcript, no entry is written twice, and each transcript equals the run without the kill."""
    said = voices()
    total = sum(len(v.chunks) for v in said.values())
    started = time.monotonic()
    reference = run(tmp_path / "reference", said, crash=False)
    crashed = run(tmp_path / "crashed", said, crash=True)
    lost = crashed.tally.acked - crashed.stored
    duplicated = [found for t in crashed.transcripts.values() for found in overlaps(t)]
    summary = (
        f"crash under load: {SESSIONS} sessions x {len(SPEAKERS)} speakers, {total} chunks per run, "
        f"{len(crashed.tally.acked)} acknowledged ({crashed.tally.acked_before_kill} before the SIGKILL, "
        f"{crashed.tally.pending_at_kill} of them not yet transcribed), "
        f"{crashed.tally.retried} requests retried after the kill ({crashed.tally.duplicates} answered duplicate), "
        f"acknowledged lost {len(lost)}, entries duplicated {len(duplicated)}, "
        f"{sum(len(t['entries']) for t in crashed.transcripts.values())} entries; {time.monotonic() - started:.1f} s"
    )
    print(summary)
    REPORTS.append(summary)  # printed with the other faults' counts at the end of the run
    for outcome in (reference, crashed):
        assert not outcome.tally.refused, outcome.tally.refused[:5]
        assert len(outcome.tally.acked) == total
    assert reference.tally.retried == 0  # without the kill, every request got an answer, none a 5xx
    assert 0 < crashed.tally.acked_before_kill < total  # the kill came midway
    assert crashed.tally.retried > 0  # and cut requests off
    assert not lost, f"acknowledged but not stored: {sorted(lost)[:10]}"
    assert not duplicated, duplicated[:5]
    for index in range(SESSIONS):
        sent = {speaker: len(said[index, speaker].chunks) for speaker in SPEAKERS}
        assert crashed.sessions[index]["next_sequence"] == sent
        assert crashed.sessions[index]["status"] == "ended"
        assert not any(crashed.transcripts[index]["failed_sequences"].values())
    assert not uncovered(reference, said) and not uncovered(crashed, said)
    for index in range(SESSIONS):
        assert lines(crashed.transcripts[index]) == lines(reference.transcripts[index]), f"session {index}"
