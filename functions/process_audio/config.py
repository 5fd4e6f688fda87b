"""The live path's tunables, set once from Settings (bridge/services.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from functions.process_audio.segmenter import SegmenterConfig


@dataclass(frozen=True, slots=True)
class LiveConfig:
    gap_timeout_s: float = 10.0
    workers: int = 32  # processing runs at once (per process), across all speakers
    partials: bool = False
    prompt_context_chars: int = 200
    retry_base_s: float = 5.0
    speculate: bool = True  # streamed speakers: decode the utterance during its pause (free locally, paid remotely)
    engine_timeout_s: float = 30.0  # a streaming engine's last text after the speaker's end
    segmenter: SegmenterConfig = field(default_factory=SegmenterConfig)
    # a speaker on the streaming socket: small frames make a shorter pause affordable, and the line comes sooner
    stream_segmenter: SegmenterConfig = field(
        default_factory=lambda: SegmenterConfig(min_pause_ms=500, max_utterance_ms=8_000)
    )
