"""Fixtures for the engine tests: the bundled local model (loaded once per session) and the speech clips."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.stt.base import Pcm
from shared.stt.local import LocalTranscriber
from shared.stt.wavio import pcm_from_wav_bytes

STT_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "stt"


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


CLIP_NAMES = ("i_tell_you", "testing_routine")


@pytest.fixture(scope="session")
def local_transcriber() -> Iterator[LocalTranscriber]:
    """The bundled tiny.en model, loaded once for the whole test session."""
    engine = LocalTranscriber()
    engine.load()
    yield engine
    engine.close_sync()
