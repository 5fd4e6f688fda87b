"""Hypothesis against the assembler: one recording, cut into chunks at random, posted in any order, with replays.

The audio is a committed recording (two spoken sentences and a pause, 10.9 s) cut into WAV chunks of 0.2 to
3 s; sequence numbers follow the cut. The engine is the simulated one: its text is a hash of the exact samples
of each utterance it is given, so any sample lost, repeated or moved between utterances changes the words.

For one cut, the order chunks arrive in, replays of chunks already sent (each answered `duplicate`) and a
second speaker sending the same audio interleaved must not change a speaker's transcript at all: the same
entries, words and sequence ranges, at the same times relative to its first entry (absolute times count from
when the speaker's first chunk arrived), as the cut posted once in order; no entry appears twice.

Across cuts the words cannot be compared: the speech model sees each chunk at a gain computed on that whole
chunk, so utterance edges move by a few 32 ms windows with the cut, and the hashed words move with them (an
utterance that ends in the chunk it starts in also shares its entry with the next). What a cut must not change
is the speech itself: as many utterances as the 2 s cut gives, each as long as there within 0.5 s.
"""

from __future__ import annotations

import base64
import re
import zlib
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from shared.stt.base import SAMPLE_RATE
from shared.stt.wavio import wav_bytes
from tests.fuzz.counts import tally
from tests.fuzz.support import Client, add_tenant, new_session
from tests.helpers import FIXTURES, bearer, load_pcm

SPEAKERS = ("candidate", "interviewer")
UTTERANCE = re.compile(r"\[simulated (\d+\.\d) s\]")
TOLERANCE_S = 0.5

assembler = tally(
    "assembler",
    runs="runs",
    chunks="chunks posted",
    replays="replays",
    duplicate_answers="answered duplicate",
    duplicated_entries="entries duplicated",
    different="transcripts that differ",
)


@cache
def speech() -> np.ndarray[Any, np.dtype[np.float32]]:
    return load_pcm(FIXTURES / "live" / "two_sentences.flac")


@st.composite
def cuts(draw: st.DrawFn) -> tuple[int, ...]:
    """Where each chunk ends, in samples: chunks of 0.2 to 3 s (the last one whatever is left)."""
    total, ends = len(speech()), []
    position = 0
    while position < total:
        position = min(total, position + draw(st.integers(200, 3000)) * SAMPLE_RATE // 1000)
        ends.append(position)
    return tuple(ends)


def chunks_of(ends: tuple[int, ...]) -> list[bytes]:
    starts = (0, *ends[:-1])
    return [wav_bytes(speech()[start:end]) for start, end in zip(starts, ends, strict=True)]


def post(client: Client, token: str, session_id: str, speaker: str, sequence: int, data: bytes) -> str:
    body = {
        "session_id": session_id,
        "speaker": speaker,
        "sequence_number": sequence,
        "audio_chunk": base64.b64encode(data).decode(),
        "mime_type": "audio/wav",
    }
    answer = client.post("/functions/v1/process-audio", json=body, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assembler.add("chunks")
    status: str = answer.json()["status"]
    return status


def ended_transcript(client: Client, token: str, session_id: str) -> list[dict[str, Any]]:
    assert client.post(f"/sessions/{session_id}/end", headers=bearer(token)).status_code == 200
    answer = client.get(f"/sessions/{session_id}/transcript", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, Any]] = answer.json()["entries"]
    return entries


def in_order(client: Client, api_key: str, chunks: list[bytes]) -> list[dict[str, Any]]:
    """The transcript of `chunks` posted once each, in sequence order, by one speaker."""
    session_id, token = new_session(client, api_key)
    for sequence, data in enumerate(chunks):
        assert post(client, token, session_id, "candidate", sequence, data) == "accepted"
    return ended_transcript(client, token, session_id)


def shape(entries: list[dict[str, Any]], speaker: str) -> list[tuple[Any, ...]]:
    """A speaker's entries as what must not depend on arrival: sequence range, words, and times relative to the
    speaker's first entry (the speaker's clock starts when its first chunk arrives)."""
    own = sorted((e for e in entries if e["speaker"] == speaker), key=lambda e: e["first_sequence"])
    origin = own[0]["start_ms"] if own else 0
    return [
        (e["first_sequence"], e["last_sequence"], e["text"], e["start_ms"] - origin, e["end_ms"] - origin) for e in own
    ]


def count_duplicates(entries: list[dict[str, Any]]) -> int:
    """Entries that repeat another's place (speaker and first sequence) or its text at the same time."""
    places = [(e["speaker"], e["first_sequence"]) for e in entries]
    spoken = [(e["speaker"], e["text"], e["start_ms"]) for e in entries]
    return (len(places) - len(set(places))) + (len(spoken) - len(set(spoken)))


def utterances(entries: list[dict[str, Any]]) -> list[float]:
    """The length of each utterance the engine was given, in order (an entry may hold more than one)."""
    text = " ".join(e["text"] for e in sorted(entries, key=lambda e: e["first_sequence"]))
    return [float(seconds) for seconds in UTTERANCE.findall(text)]


_SETTINGS = settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))


def test_arrival_order_and_replays_do_not_change_the_transcript(fuzz_bridge: Callable[..., Any]) -> None:
    """Any arrival order, replays and an interleaved second speaker give each speaker the transcript of its
    chunks posted once in order, every replay is answered duplicate, and no entry appears twice."""
    with fuzz_bridge(gap_timeout_s=3600.0) as client:
        _, api_key = add_tenant(client, "assembler")

        @seed(zlib.crc32(b"arrival order"))
        @settings(_SETTINGS, max_examples=30)
        @given(ends=cuts(), data=st.data())
        def run(ends: tuple[int, ...], data: st.DataObject) -> None:
            chunks = chunks_of(ends)
            expected = shape(in_order(client, api_key, chunks), "candidate")
            posts = [(speaker, sequence) for speaker in SPEAKERS for sequence in range(len(chunks))]
            order: list[tuple[str, int]] = list(data.draw(st.permutations(posts), label="arrival order"))
            replays = data.draw(st.lists(st.sampled_from(posts), max_size=10), label="replays")
            for replayed in replays:  # anywhere after the chunk's first arrival, right after it included
                after = order.index(replayed) + 1
                order.insert(data.draw(st.integers(after, len(order)), label="replay at"), replayed)

            session_id, token = new_session(client, api_key)
            seen: set[tuple[str, int]] = set()
            for speaker, sequence in order:
                status = post(client, token, session_id, speaker, sequence, chunks[sequence])
                if (speaker, sequence) in seen:
                    assembler.add("replays")
                    assembler.add("duplicate_answers", int(status == "duplicate"))
                    assert status == "duplicate", f"replay of {speaker} {sequence} answered {status}"
                else:
                    assert status == "accepted", f"{speaker} {sequence} answered {status}"
                seen.add((speaker, sequence))
            entries = ended_transcript(client, token, session_id)
            assembler.add("runs")

            duplicated = count_duplicates(entries)
            assembler.add("duplicated_entries", duplicated)
            assert duplicated == 0, entries
            for speaker in SPEAKERS:
                if shape(entries, speaker) != expected:
                    assembler.add("different")
                    raise AssertionError(f"{speaker}: {shape(entries, speaker)} != {expected} (posted once in order)")

        run()


def test_any_cut_keeps_the_utterances(fuzz_bridge: Callable[..., Any]) -> None:
    """However the recording is cut into chunks, its transcript holds the same utterances as with 2 s chunks,
    each as long within half a second, and no entry twice."""
    with fuzz_bridge(gap_timeout_s=3600.0) as client:
        _, api_key = add_tenant(client, "assembler")
        two_seconds = (*range(2 * SAMPLE_RATE, len(speech()), 2 * SAMPLE_RATE), len(speech()))
        expected = utterances(in_order(client, api_key, chunks_of(two_seconds)))
        assert len(expected) == 2, expected  # the recording's two sentences

        @seed(zlib.crc32(b"any cut"))
        @settings(_SETTINGS, max_examples=30)
        @given(ends=cuts())
        def run(ends: tuple[int, ...]) -> None:
            entries = in_order(client, api_key, chunks_of(ends))
            assembler.add("runs")
            duplicated = count_duplicates(entries)
            assembler.add("duplicated_entries", duplicated)
            assert duplicated == 0, entries
            heard = utterances(entries)
            same = len(heard) == len(expected) and all(
                abs(a - b) <= TOLERANCE_S for a, b in zip(heard, expected, strict=True)
            )
            if not same:
                assembler.add("different")
            assert same, f"utterances {heard} s with chunks ending at {ends}, {expected} s with 2 s chunks"

        run()
