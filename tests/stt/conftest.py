"""Helpers for the engine tests: the committed speech clips with their reference transcripts.

The session-scoped `local_transcriber` fixture (the bundled tiny.en, loaded once per test session) lives
in tests/conftest.py, so the engine tests and the live-path tests share one loaded model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.stt.base import Pcm
from shared.stt.wavio import pcm_from_wav_bytes

STT_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "stt"
CLIP_NAMES = ("i_tell_you", "testing_routine")


@dataclass(frozen=True)
class Clip:
    name: str
    pcm: Pcm
    reference: str


def load_clip(name: str) -> Clip:
    """A 16 kHz mono speech clip from tests/fixtures/stt with its reference transcript."""
    pcm, rate = pcm_from_wav_bytes((STT_FIXTURES / f"{name}.wav").read_bytes())
    assert rate == 16_000
    reference = (STT_FIXTURES / f"{name}.txt").read_text(encoding="utf-8").strip()
    return Clip(name, pcm, reference)
