"""The rewritten Silero graph: same probabilities and speech regions as the stock model, loaded by default, and a
clear error plus a fallback to the stock model when faster-whisper's file is not the expected export."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import onnx
import pytest

from bench import devset
from shared.audio.decode import decode_chunk
from shared.audio.formats import inspect_chunk
from shared.audio.levels import normalized
from shared.audio.silero_graph import UnexpectedSileroModel, fast_silero_model
from shared.audio.vad import SpeechDetector, VadTrack
from shared.stt.base import SAMPLE_RATE, Pcm
from tests.helpers import FIXTURES

SPEECH = [*sorted((FIXTURES / "speech").glob("*.wav")), FIXTURES / "live" / "two_sentences.flac"]
CHUNK = 2 * SAMPLE_RATE


def stock_path() -> str:
    from faster_whisper.utils import get_assets_path

    return os.path.join(get_assets_path(), "silero_vad_v6.onnx")


@pytest.fixture(scope="module")
def fast() -> SpeechDetector:
    return SpeechDetector()


@pytest.fixture(scope="module")
def stock() -> SpeechDetector:
    return SpeechDetector(model_path=stock_path())


def speech(path: Path) -> Pcm:
    data = path.read_bytes()
    return normalized(decode_chunk(data, inspect_chunk(data, None)))


def noises() -> dict[str, Pcm]:
    return {
        "white": normalized(devset.white_noise(6.0, -40.0, 1)),
        "pink": normalized(devset.pink_noise(6.0, -30.0, 2)),
        "hum": normalized(devset.hum(6.0, -20.0, 3)),
    }


def track_probs(detector: SpeechDetector, pcm: Pcm) -> np.ndarray:
    """Probabilities as the bridge computes them: a VadTrack extended chunk by chunk."""
    track = VadTrack(detector)
    for start in range(0, pcm.size, CHUNK):
        track.extend(pcm[start : start + CHUNK])
    return track.probabilities()


def assert_same(fast: SpeechDetector, stock: SpeechDetector, pcm: Pcm) -> None:
    for probs_of in (SpeechDetector.probabilities, track_probs):
        a, b = probs_of(fast, pcm), probs_of(stock, pcm)
        assert a.shape == b.shape
        assert np.abs(a - b).max() < 1e-4
        assert SpeechDetector.speech_regions(a) == SpeechDetector.speech_regions(b)


@pytest.mark.parametrize("path", SPEECH, ids=[p.stem for p in SPEECH])
def test_fast_graph_matches_stock_on_speech(fast: SpeechDetector, stock: SpeechDetector, path: Path) -> None:
    """On real speech the fast graph's probabilities are within 1e-4 of the stock model's, with identical regions."""
    pcm = speech(path)
    assert SpeechDetector.speech_regions(stock.probabilities(pcm))  # the comparison covers found speech
    assert_same(fast, stock, pcm)


@pytest.mark.parametrize("name", ["white", "pink", "hum"])
def test_fast_graph_matches_stock_on_noise(fast: SpeechDetector, stock: SpeechDetector, name: str) -> None:
    """On noise lifted to the common level the fast graph matches the stock model's probabilities and regions."""
    assert_same(fast, stock, noises()[name])


def test_default_detector_loads_the_fast_graph(fast: SpeechDetector, stock: SpeechDetector) -> None:
    """The default detector runs the rewritten graph, which has no Conv nodes; an explicit path runs as given."""
    fast.warm_up()
    stock.warm_up()
    assert fast.graph == "fast"
    assert stock.graph == "stock"
    ops = {node.op_type for node in onnx.load_from_string(fast_silero_model(stock_path())).graph.node}
    assert "Conv" not in ops
    assert {"MatMul", "LSTM"} <= ops


def test_unreadable_model_gives_a_clear_error(tmp_path: Path) -> None:
    """A file that is not an ONNX model raises UnexpectedSileroModel naming the expected export."""
    bad = tmp_path / "silero_vad_v6.onnx"
    bad.write_bytes(b"not a model")
    with pytest.raises(UnexpectedSileroModel, match="faster-whisper v6"):
        fast_silero_model(str(bad))


def test_unexpected_structure_falls_back_to_stock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A runnable model of another structure is refused by the rewrite and the detector runs it as the stock model."""
    other = tmp_path / "silero_vad_v6.onnx"
    other.write_bytes(fast_silero_model(stock_path()))  # same interface, but no Conv nodes to extract
    with pytest.raises(UnexpectedSileroModel, match="Conv nodes"):
        fast_silero_model(str(other))
    monkeypatch.setattr("faster_whisper.utils.get_assets_path", lambda: str(tmp_path))
    detector = SpeechDetector()
    with caplog.at_level(logging.WARNING, logger="shared.audio.vad"):
        probs = detector.probabilities(speech(SPEECH[0]))
    assert detector.graph == "stock"
    assert probs.size and float(probs.max()) > 0.5
    assert [r.getMessage() for r in caplog.records if "Silero rewrite not applied" in r.getMessage()]
