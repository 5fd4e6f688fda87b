"""Where to cut a speaker's pending audio into utterances: a pure function of the buffer and its speech regions.

Cutting at real pauses is what keeps chunked transcription close to whole-file quality (see
transcription-quality.md, section 7): a final at a pause of at least 0.8 s, else, past 15 s, at the widest
pause. One rule keeps entry keys unique: a cut never falls inside the chunk where the utterance starts, so the
next utterance always starts in a later chunk (entries are unique per first chunk). That rule also makes a
whole file sent as one chunk a single engine call.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

SAMPLES_PER_MS = 16


@dataclass(frozen=True, slots=True)
class SegmenterConfig:
    min_pause_ms: int = 800
    max_utterance_ms: int = 15_000
    lead_pad_ms: int = 300  # speech onset padding kept before the first word
    tail_pad_ms: int = 300  # silence kept after the last word inside a cut
    min_drop_ms: int = 500  # leading silence is trimmed only in steps this large (each trim re-runs the VAD)


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do with the buffer now.

    `drop` samples at the front hold no speech and can be discarded without a call. When `cut` is set, the
    samples [`drop`, `speech_end`) are transcribed as a final utterance and the buffer continues at `cut`
    (the silence between them is consumed without being sent to the engine).
    """

    drop: int
    cut: int | None = None
    speech_end: int | None = None


def decide(
    total: int,
    regions: Sequence[tuple[int, int]],
    chunk_starts: Sequence[int],
    *,
    final: bool,
    config: SegmenterConfig = SegmenterConfig(),
) -> Decision:
    """Decide on a buffer of `total` samples with speech `regions` (sample ranges, sorted).

    `chunk_starts` are the buffer offsets where each chunk begins (the first is 0). `final` flushes everything.
    """
    lead = config.lead_pad_ms * SAMPLES_PER_MS
    if not regions:
        # Nothing said: keep only a short tail, where a word may be starting.
        return Decision(drop=max(0, total - lead) if not final else total)
    start = max(0, regions[0][0] - lead)
    tail = config.tail_pad_ms * SAMPLES_PER_MS
    if final:
        return Decision(drop=start, cut=total, speech_end=min(total, regions[-1][1] + tail))
    start_chunk = chunk_index(chunk_starts, start)
    min_pause = config.min_pause_ms * SAMPLES_PER_MS

    # Trailing pause long enough: the utterance is over. Cut near the end of the buffer, but keep its last
    # `lead_pad_ms` where the next word may be starting (the detector needs a few windows to call it speech),
    # unless that tail lies in the chunk this utterance started in (entry keys stay unique).
    if total - regions[-1][1] >= min_pause:
        speech_end = min(total, regions[-1][1] + tail)
        keep_from = max(speech_end, total - lead)
        end_cut = keep_from if chunk_index(chunk_starts, keep_from) > start_chunk else total
        return Decision(drop=start, cut=end_cut, speech_end=speech_end)
    # Inner pauses long enough: cut at the last one that respects the chunk rule.
    pauses = [(regions[i][1], regions[i + 1][0]) for i in range(len(regions) - 1)]
    for p0, p1 in reversed(pauses):
        if p1 - p0 >= min_pause:
            cut = _cut_in_pause(p0, p1, tail, chunk_starts, start_chunk)
            if cut is not None:
                return Decision(drop=start, cut=cut, speech_end=min(cut, p0 + tail))
    if total - start <= config.max_utterance_ms * SAMPLES_PER_MS:
        return Decision(drop=start if start >= config.min_drop_ms * SAMPLES_PER_MS else 0)
    # Too long without a real pause: cut at the widest pause that respects the chunk rule, else at the end.
    for p0, p1 in sorted(pauses, key=lambda p: p[1] - p[0], reverse=True):
        cut = _cut_in_pause(p0, p1, tail, chunk_starts, start_chunk)
        if cut is not None:
            return Decision(drop=start, cut=cut, speech_end=min(cut, p0 + tail))
    return Decision(drop=start, cut=total, speech_end=total)


def chunk_index(chunk_starts: Sequence[int], position: int) -> int:
    """Which chunk (index into `chunk_starts`) holds sample `position`."""
    return bisect_right(chunk_starts, position) - 1


def _cut_in_pause(p0: int, p1: int, tail: int, chunk_starts: Sequence[int], start_chunk: int) -> int | None:
    """A cut inside the pause [p0, p1): `tail` after the last word if possible, in a chunk after `start_chunk`."""
    earliest = min(p0 + tail, (p0 + p1) // 2)
    first_allowed = chunk_starts[start_chunk + 1] if start_chunk + 1 < len(chunk_starts) else None
    if first_allowed is None:
        return None
    cut = max(earliest, first_allowed)
    return cut if cut < p1 else None


def split_at_pauses(
    regions: Sequence[tuple[int, int]], start: int, end: int, *, config: SegmenterConfig = SegmenterConfig()
) -> list[tuple[int, int]]:
    """Cut the utterance [`start`, `end`) into pieces for the engine, at pauses in its speech `regions`.

    A pause of at least `min_pause_ms` ends a piece (as it ends an utterance on the live path), and a piece
    longer than `max_utterance_ms` is cut at its widest pause, so a whole file sent as one chunk is decoded like
    the same audio sent in 2 s chunks, and the model never decodes long gaps (where it invents text) or drops
    speech past its 30 s window. Pieces keep `lead_pad_ms`/`tail_pad_ms` of context; no speech is left out.
    """
    inside = [(max(s, start), min(e, end)) for s, e in regions if min(e, end) > max(s, start)]
    if not inside:
        return [(start, end)] if end > start else []
    groups: list[list[tuple[int, int]]] = [[inside[0]]]
    for region in inside[1:]:
        if region[0] - groups[-1][-1][1] >= config.min_pause_ms * SAMPLES_PER_MS:
            groups.append([region])
        else:
            groups[-1].append(region)
    limit = config.max_utterance_ms * SAMPLES_PER_MS
    bounded: list[list[tuple[int, int]]] = []
    for group in groups:
        bounded.extend(_bound(group, limit))
    lead, tail = config.lead_pad_ms * SAMPLES_PER_MS, config.tail_pad_ms * SAMPLES_PER_MS
    pieces: list[tuple[int, int]] = []
    for i, group in enumerate(bounded):
        lo = start if i == 0 else max(group[0][0] - lead, (bounded[i - 1][-1][1] + group[0][0]) // 2)
        hi = end if i == len(bounded) - 1 else min(group[-1][1] + tail, (group[-1][1] + bounded[i + 1][0][0]) // 2)
        pieces.append((lo, hi))
    return pieces


def _bound(group: list[tuple[int, int]], limit: int) -> list[list[tuple[int, int]]]:
    """Split a run of regions longer than `limit` samples at its widest pause, recursively."""
    if group[-1][1] - group[0][0] <= limit or len(group) < 2:
        return [group]
    widest = max(range(1, len(group)), key=lambda i: group[i][0] - group[i - 1][1])
    return _bound(group[:widest], limit) + _bound(group[widest:], limit)
