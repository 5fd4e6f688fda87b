"""How long after someone stops talking does their line appear? Streams two-speaker interviews at real-time pace.

Each track of a synthetic interview in ../shared/data (one WAV per microphone) is cut into 2 s WAV chunks and
posted through the live path in-process, one chunk per speaker every 2 s, as two browsers would. A subscriber on
the session's topic timestamps every `transcript_entry` and `transcript_partial`. Printed per entry: the delay
from the end of its speech (audio time, `end_ms`) to its arrival; from the moment the closing chunk was posted
(the chunk holding the end of speech plus the 0.8 s pause that closes it) to its arrival; the delay from the start
of speech to the first partial of it; and how many chunks that extended an open utterance were followed by a
partial through them. Real time: each interview takes as long as it lasts.

    .venv/bin/python bench/latency.py [--data ../shared/data] [--interviews 2] [--engine local] [--chunk-seconds 2]
                                      [--at-once]   # all interviews concurrently: how many one process carries
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bridge.offline import split_chunks  # noqa: E402
from bridge.services import build_services  # noqa: E402
from functions.process_audio.models import ProcessAudioRequest  # noqa: E402
from functions.process_audio.service import process_audio  # noqa: E402
from functions.process_audio.stream import SpeakerStreamIngest, StreamFormat  # noqa: E402
from shared.audio.decode import decode_chunk  # noqa: E402
from shared.audio.formats import inspect_chunk  # noqa: E402
from shared.broadcast.local import LocalHub  # noqa: E402
from shared.credentials import hash_api_key, new_api_key  # noqa: E402
from shared.models import Session, Tenant, utcnow  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.stt.wavio import wav_bytes  # noqa: E402
from shared.stt.wer import word_errors  # noqa: E402

PAUSE_S = 0.8  # the segmenter's pause that closes an utterance


def pcm_of(path: Path) -> Any:
    data = path.read_bytes()
    return decode_chunk(data, inspect_chunk(data, None))


async def speaker_stream(
    services: Any, session: Session, speaker: str, chunks: list[bytes], t0: float, step: float, stream: bool = False
) -> None:
    """Post chunk n when its audio has been 'recorded': at t0 + (n + 1) * step. With `stream`, each chunk is a
    raw PCM frame taken the way the streaming socket takes it (`SpeakerStreamIngest`), not a process-audio chunk."""
    ingest = SpeakerStreamIngest(services.live, session, speaker, StreamFormat("audio/wav", 16_000), 0)
    for seq, chunk in enumerate(chunks):
        await asyncio.sleep(max(0.0, t0 + (seq + 1) * step - time.monotonic()))
        if stream:
            await ingest.take(chunk[44:])  # the frame's samples without their WAV header
            continue
        request = ProcessAudioRequest(
            session_id=session.id,
            audio_chunk=base64.b64encode(chunk).decode(),
            speaker=speaker,
            sequence_number=seq,
            mime_type="audio/wav",
        )
        await process_audio(request, session, services.live)


@dataclass
class Latencies:
    finals: list[float] = field(default_factory=list)  # end of speech -> entry
    closing: list[float] = field(default_factory=list)  # closing chunk posted -> entry
    partials: list[float] = field(default_factory=list)  # start of speech -> first partial
    partial_chunks: int = 0  # chunks that extended an open utterance and were followed by a partial through them
    extending_chunks: int = 0
    spoken_finals: list[float] = field(default_factory=list)  # the last word's end (segments.tsv) -> entry
    word_errors: int = 0  # the transcript against the script, per speaker
    words: int = 0

    def add(self, other: Latencies) -> None:
        self.finals += other.finals
        self.spoken_finals += other.spoken_finals
        self.word_errors += other.word_errors
        self.words += other.words
        self.closing += other.closing
        self.partials += other.partials
        self.partial_chunks += other.partial_chunks
        self.extending_chunks += other.extending_chunks


async def one_interview(
    services: Any, hub: LocalHub, tenant: Tenant, folder: Path, step: float, stream: bool = False
) -> Latencies:
    paths = {role: next(iter(sorted(folder.glob(f"*_{role}.wav")))) for role in ("interviewer", "candidate")}  # noqa: ASYNC240
    tracks = {role: pcm_of(path) for role, path in paths.items()}
    chunks = {role: [wav_bytes(p) for p in split_chunks(pcm, step)] for role, pcm in tracks.items()}
    session = Session.new(tenant.id)
    await services.store.create_session(session)
    subscription = hub.subscribe(f"session:{session.id}")
    arrivals: list[tuple[float, str, dict[str, Any]]] = []

    async def listen() -> None:
        async for event, payload in subscription:
            arrivals.append((time.monotonic(), event, payload))

    listener = asyncio.create_task(listen())
    t0 = time.monotonic()
    await asyncio.gather(*(speaker_stream(services, session, role, chunks[role], t0, step, stream) for role in chunks))
    await asyncio.sleep(3 * step)  # let the last pauses close their utterances before `end` would flush them
    subscription.close()
    await listener
    entries = [(at, p) for at, event, p in arrivals if event == "transcript_entry"]
    finals = [at - (t0 + p["end_ms"] / 1000) for at, p in entries]
    # the closing chunk holds the end of speech plus the 0.8 s pause that proves it; it is posted when recorded
    closing = [at - (t0 + (int((p["end_ms"] / 1000 + PAUSE_S) // step) + 1) * step) for at, p in entries]
    partial_through = {
        (p["speaker"], p["through_sequence"]) for _, event, p in arrivals if event == "transcript_partial"
    }
    extending = [(p["speaker"], seq) for _, p in entries for seq in range(p["first_sequence"], p["last_sequence"])]
    covered = sum(1 for key in extending if key in partial_through)
    partials: list[float] = []
    firsts: dict[str, float] = {}
    for at, event, p in arrivals:
        if event == "transcript_partial":
            firsts.setdefault(f"{p['speaker']}:{p['through_sequence']}", at - t0)
    for at, event, p in arrivals:
        if event == "transcript_entry":
            spoken = p["start_ms"] / 1000
            before = [v for k, v in firsts.items() if k.startswith(p["speaker"] + ":") and spoken <= v <= at - t0]
            if before:
                partials.append(min(before) - spoken)
    spoken = spoken_ends(folder)
    spoken_finals = []
    for at, p in entries:  # the last sentence of this speaker that ends inside the entry's audio
        ends = [
            end for role, end in spoken if role == p["speaker"] and p["start_ms"] / 1000 < end <= p["end_ms"] / 1000
        ]
        if ends:
            spoken_finals.append(at - (t0 + max(ends)))
    errors = words = 0
    for role, path in paths.items():
        said = " ".join(
            p["text"]
            for _, p in sorted((e for e in entries if e[1]["speaker"] == role), key=lambda e: e[1]["start_ms"])
        )
        found_errors, found_words = word_errors(path.with_suffix(".txt").read_text(encoding="utf-8"), said)
        errors, words = errors + found_errors, words + found_words
    return Latencies(finals, closing, partials, covered, len(extending), spoken_finals, errors, words)


def spoken_ends(folder: Path) -> list[tuple[str, float]]:
    """(speaker, end of the sentence in s) for every sentence the interview's script says was spoken."""
    rows = (folder / "segments.tsv").read_text(encoding="utf-8").splitlines()[1:]
    return [(row.split("\t")[2], float(row.split("\t")[1])) for row in rows if row.strip()]


def describe(label: str, values: list[float]) -> None:
    if not values:
        print(f"{label}: none")
        return
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    print(
        f"{label}: n={len(values)}  median {statistics.median(values):.2f} s  p95 {p95:.2f} s  max {max(values):.2f} s"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--interviews", type=int, default=2)
    parser.add_argument("--engine", default="local")
    parser.add_argument("--chunk-seconds", type=float, default=2.0)
    parser.add_argument(
        "--stream", action="store_true", help="250 ms PCM frames through the streaming socket's ingest, not chunks"
    )
    parser.add_argument(
        "--at-once", action="store_true", help="run the interviews concurrently (a capacity check), not one by one"
    )
    args = parser.parse_args()
    if args.stream and args.chunk_seconds == 2.0:  # frames of 250 ms unless --chunk-seconds says otherwise
        args.chunk_seconds = 0.25
    found_folders = sorted((args.data / "synthetic").glob("interview_*"))
    folders = [found_folders[i % len(found_folders)] for i in range(args.interviews)]  # reused past the six
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(
            _env_file=None, data_dir=Path(scratch), store="sqlite", stt_engine=args.engine, rate_limits="off"
        )  # type: ignore[call-arg]
        hub = LocalHub()
        services = build_services(settings, broadcaster=hub)
        await services.start()
        await services.transcriber.wait_ready()
        tenant = Tenant(id=str(uuid.uuid4()), name="latency", created_at=utcnow())
        await services.store.create_tenant(tenant, hash_api_key(new_api_key()))
        total = Latencies()
        if args.at_once:
            runs = [one_interview(services, hub, tenant, f, args.chunk_seconds, args.stream) for f in folders]
            results = list(zip(folders, await asyncio.gather(*runs), strict=True))
        else:
            results = [
                (f, await one_interview(services, hub, tenant, f, args.chunk_seconds, args.stream)) for f in folders
            ]
        for folder, found in results:
            print(f"{folder.name}: {len(found.finals)} entries")
            total.add(found)
        speculated = services.live.assembly.speculations_used
        bare_errors = 0
        for folder in sorted(set(folders)):  # the bare model on each whole track: what the bridge should match
            for path in sorted(folder.glob("*.wav")):
                heard = await services.transcriber.transcribe(pcm_of(path), language="en")
                bare_errors += word_errors(path.with_suffix(".txt").read_text(encoding="utf-8"), heard.text)[0]
        bare_errors *= len(folders) // max(1, len(set(folders)))
        await services.close()
    frames = f"{args.chunk_seconds * 1000:g} ms PCM frames through the stream ingest"
    shape = frames if args.stream else f"{args.chunk_seconds:g} s chunks"
    print(f"engine {args.engine}, {shape} at real-time pace, two speakers per session")
    describe("end of speech (the script's last word) -> final entry", total.spoken_finals)
    describe("end of the entry's audio (end_ms, after the kept tail) -> final entry", total.finals)
    describe("closing chunk posted -> final entry", total.closing)
    describe("start of speech -> first partial", total.partials)
    print(
        f"chunks extending an open utterance followed by a partial through them: "
        f"{total.partial_chunks} of {total.extending_chunks}"
    )
    print(
        f"word errors against the script: {total.word_errors}/{total.words} "
        f"({total.word_errors / max(1, total.words):.1%}); the bare model on the whole tracks: {bare_errors}"
    )
    if args.stream:
        print(f"finals whose decode began during the pause: {speculated} of {len(total.finals)}")


if __name__ == "__main__":
    asyncio.run(main())
