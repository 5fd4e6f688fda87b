"""Where the segmenter cuts a speaker's pending audio into utterances."""

from __future__ import annotations

import itertools

from functions.process_audio.segmenter import Decision, SegmenterConfig, decide, split_at_pauses

S = 16  # samples per millisecond
CHUNK = 2000 * S


def chunk_starts(total_ms: int) -> list[int]:
    return list(range(0, total_ms * S, CHUNK))


def test_silence_is_dropped_but_a_short_tail_is_kept() -> None:
    """With no speech, everything but the last 300 ms is dropped and nothing is transcribed."""
    decision = decide(4000 * S, [], chunk_starts(4000), final=False)
    assert decision == Decision(drop=3700 * S)


def test_silence_at_the_end_of_a_session_is_dropped_whole() -> None:
    """A final flush of silence drops all of it without an engine call."""
    assert decide(4000 * S, [], chunk_starts(4000), final=True) == Decision(drop=4000 * S)


def test_open_utterance_waits_for_a_pause() -> None:
    """Speech running to the end of the buffer is not cut: the leading silence goes, the rest waits."""
    decision = decide(4000 * S, [(1000 * S, 4000 * S)], chunk_starts(4000), final=False)
    assert decision == Decision(drop=700 * S)


def test_trailing_pause_of_800_ms_finishes_the_utterance() -> None:
    """Speech followed by at least 0.8 s of silence is final; the engine hears it plus 300 ms of tail, and the
    buffer's last 300 ms, where the next word may be starting, stay for the next utterance."""
    decision = decide(4000 * S, [(500 * S, 3000 * S)], chunk_starts(4000), final=False)
    assert decision == Decision(drop=200 * S, cut=3700 * S, speech_end=3300 * S)


def test_the_kept_tail_never_falls_in_the_chunk_the_utterance_started_in() -> None:
    """When the whole utterance and its pause lie in one chunk, the cut takes all of it (entry keys stay unique)."""
    decision = decide(2000 * S, [(100 * S, 900 * S)], chunk_starts(2000), final=False)
    assert decision == Decision(drop=0, cut=2000 * S, speech_end=1200 * S)


def test_short_pause_does_not_cut() -> None:
    """A 0.5 s pause inside a turn keeps the sentence whole."""
    regions = [(0, 1500 * S), (2000 * S, 4000 * S)]
    assert decide(4000 * S, regions, chunk_starts(4000), final=False).cut is None


def test_inner_pause_cuts_in_a_later_chunk_only() -> None:
    """An inner pause is cut in a chunk after the one where the utterance began, keeping entry keys unique."""
    regions = [(100 * S, 1500 * S), (3000 * S, 6000 * S)]  # pause 1.5-3.0 s, crosses the 2 s chunk boundary
    decision = decide(6000 * S, regions, chunk_starts(6000), final=False)
    assert decision.cut == 2000 * S  # not at 1.8 s, which lies in the first chunk
    assert decision.speech_end == 1800 * S
    inside_first_chunk = [(100 * S, 500 * S), (1400 * S, 6000 * S)]  # 0.9 s pause wholly inside chunk 0
    assert decide(6000 * S, inside_first_chunk, chunk_starts(6000), final=False).cut is None


def test_long_speech_is_cut_at_the_widest_pause() -> None:
    """Past 15 s without a real pause, the utterance is cut at its widest pause."""
    regions = [(0, 5000 * S), (5300 * S, 9000 * S), (9600 * S, 16500 * S)]
    decision = decide(16500 * S, regions, chunk_starts(16500), final=False)
    assert decision.cut is not None
    assert 9000 * S <= decision.cut < 9600 * S


def test_long_speech_without_any_pause_is_cut_at_the_end() -> None:
    """Past 15 s with no pause at all, the whole buffer becomes one utterance."""
    decision = decide(16000 * S, [(0, 16000 * S)], chunk_starts(16000), final=False)
    assert decision == Decision(drop=0, cut=16000 * S, speech_end=16000 * S)


def test_one_whole_file_chunk_is_one_utterance() -> None:
    """A whole recording sent as one chunk is never cut inside: one engine call, as the CLI's --chunk-seconds 0."""
    regions = [(0, 4000 * S), (5500 * S, 9000 * S), (10500 * S, 20000 * S)]
    decision = decide(21000 * S, regions, [0], final=False)
    assert decision == Decision(drop=0, cut=21000 * S, speech_end=20300 * S)


def test_flush_transcribes_everything_left() -> None:
    """At the end of a session the open utterance is final whatever its pauses."""
    decision = decide(3000 * S, [(1000 * S, 2900 * S)], chunk_starts(3000), final=True)
    assert decision == Decision(drop=700 * S, cut=3000 * S, speech_end=3000 * S)


def test_thresholds_are_settings() -> None:
    """A shorter minimum pause cuts where the default would not."""
    regions = [(0, 1500 * S), (2200 * S, 4000 * S)]
    assert decide(4000 * S, regions, chunk_starts(4000), final=False).cut is None
    config = SegmenterConfig(min_pause_ms=400)
    assert decide(4000 * S, regions, chunk_starts(4000), final=False, config=config).cut == 2000 * S


def test_small_leading_silence_is_not_trimmed_alone() -> None:
    """Leading silence under 0.5 s is left in place while the utterance is open (each trim re-runs the VAD)."""
    assert decide(4000 * S, [(700 * S, 4000 * S)], chunk_starts(4000), final=False) == Decision(drop=0)
    assert decide(4000 * S, [(900 * S, 4000 * S)], chunk_starts(4000), final=False) == Decision(drop=600 * S)


def test_an_utterance_is_split_for_the_engine_at_its_real_pauses() -> None:
    """A whole file's speech is cut into pieces at pauses of 0.8 s or more; short pauses stay inside a piece."""
    regions = [(500 * S, 3000 * S), (3400 * S, 6000 * S), (8000 * S, 10_000 * S)]
    pieces = split_at_pauses(regions, 200 * S, 10_300 * S)
    assert pieces == [(200 * S, 6300 * S), (7700 * S, 10_300 * S)]


def test_a_long_stretch_without_pauses_is_split_at_its_widest_gap() -> None:
    """Speech longer than 15 s with only short pauses is cut at the widest of them, never mid-word."""
    regions = [(i * 2000 * S, (i * 2000 + 1700 - (200 if i == 5 else 0)) * S) for i in range(12)]
    pieces = split_at_pauses(regions, 0, 24_000 * S)
    assert len(pieces) == 2
    assert 11_500 * S <= pieces[0][1] <= 12_000 * S and pieces[1][0] == pieces[0][1]  # the 0.5 s gap after 11.5 s
    assert all(hi - lo <= 15_000 * S for lo, hi in pieces)


def test_no_speech_is_left_out_of_the_pieces() -> None:
    """Every speech region lies wholly inside one piece, and the pieces are in order without overlap."""
    regions = [(100 * S, 900 * S), (2000 * S, 2300 * S), (2400 * S, 9000 * S), (12_000 * S, 30_000 * S)]
    pieces = split_at_pauses(regions, 0, 31_000 * S)
    for start, end in regions:
        covering = [p for p in pieces if p[0] < end and p[1] > start]
        assert sum(min(end, hi) - max(start, lo) for lo, hi in covering) == end - start
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(pieces))
