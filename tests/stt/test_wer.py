"""The WER helper and its normaliser, which the tests and benchmarks score with."""

from __future__ import annotations

import numpy as np
import pytest

from shared.stt.base import SAMPLE_RATE
from shared.stt.wavio import pcm_from_wav_bytes, wav_bytes
from shared.stt.wer import corpus_wer, normalize_text, wer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("This isn't part of your testing routine, is it?", "this isnt part of your testing routine is it"),
        ("Mr. Quilter is the apostle", "mister quilter is the apostle"),
        ("6 times 10 equals 60, not 600,000", "six times ten equals sixty not six hundred thousand"),
        ("a 12% chance", "a twelve percent chance"),
        ("for the 20th time", "for the twentieth time"),
        ("one hundred and twenty", "one hundred twenty"),
        ("  Twenty-one\n  apples ", "twenty one apples"),
    ],
)
def test_normalize_text(text: str, expected: str) -> None:
    """Case, punctuation, apostrophes, titles and number formats are unified before scoring."""
    assert normalize_text(text) == expected


def test_wer_counts_substitutions_insertions_and_deletions() -> None:
    """WER is edits over reference words, independent of case and punctuation."""
    assert wer("I TELL YOU IT IS NOT POISON SHE CRIED", "I tell you, it is not poison, she cried.") == 0.0
    assert wer("a b c d", "a x c") == pytest.approx(0.5)
    assert wer("one two three", "1, 2, 3") == 0.0
    assert wer("", "") == 0.0
    assert wer("", "you") == 1.0


def test_corpus_wer_pools_words() -> None:
    """Corpus WER divides total errors by total reference words."""
    assert corpus_wer([("a b c d", "a b c d"), ("e f", "e")]) == pytest.approx(1 / 6)


def test_wav_round_trip() -> None:
    """wav_bytes writes 16-bit mono 16 kHz WAV that decodes back to the same samples within quantisation."""
    pcm = (np.sin(np.linspace(0, 100, SAMPLE_RATE)) * 0.5).astype(np.float32)
    data = wav_bytes(pcm)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    decoded, rate = pcm_from_wav_bytes(data)
    assert rate == SAMPLE_RATE
    assert np.max(np.abs(decoded - pcm)) < 1e-4
    clipped, _ = pcm_from_wav_bytes(wav_bytes(np.array([2.0, -2.0], dtype=np.float32)))
    assert clipped.tolist() == pytest.approx([32767 / 32768, -32767 / 32768])
