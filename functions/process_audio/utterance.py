"""One finished utterance to text: cut at its pauses, each piece at a common level, decoded in order.

Why each step:
- pieces at pauses: the engine never decodes long gaps (where Whisper invents text) and never gets more than
  its 30 s window at once (a whole file sent as one chunk would otherwise lose speech past it);
- a common peak level over a fixed noise floor (`levels.for_engine`): Whisper's log-mel input has a fixed floor,
  so a quiet microphone decodes worse than a loud one with the same words; lifting each piece to the same peak
  over the same floor makes the level not matter;
- each piece is prompted with the text before it (the speaker's earlier lines, then the previous pieces), as
  the model's own long-form decoding conditions on previous text.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from functions.process_audio.audio_thread import off_loop
from functions.process_audio.segmenter import SegmenterConfig, split_at_pauses
from shared.audio.levels import for_engine
from shared.stt.base import SAMPLE_RATE, Pcm, Segment, Transcriber, Transcription
from shared.stt.filters import clean_text, clean_transcription, confidence_of


async def transcribe_utterance(
    transcriber: Transcriber,
    pcm: Pcm,
    regions: Sequence[tuple[int, int]],
    *,
    language: str | None,
    prompt: str | None,
    config: SegmenterConfig | None = None,
) -> tuple[Transcription, int]:
    """Transcribe `pcm` (speech `regions` in its own sample positions); returns the cleaned text and the number
    of engine calls it took. Raises whatever the engine raises (nothing is half-stored: the caller saves)."""
    pieces = split_at_pauses(regions, 0, len(pcm), config=config or SegmenterConfig())
    texts: list[str] = []
    segments: list[Segment] = []
    confidences: list[float] = []
    detected: str | None = None
    for lo, hi in pieces:
        context = " ".join(t for t in [prompt or "", *texts] if t).strip() or None
        heard = await off_loop(for_engine, pcm[lo:hi])  # ~1 ms of noise floor per second of speech
        raw = await transcriber.transcribe(heard, language=language, prompt=context)
        piece = clean_transcription(raw)
        detected = detected or piece.language
        if piece.text:
            texts.append(piece.text)
            if piece.confidence is not None:
                confidences.append(piece.confidence)
        offset = lo / SAMPLE_RATE
        segments.extend(dataclasses.replace(s, start=s.start + offset, end=s.end + offset) for s in piece.segments)
    kept = tuple(segments)
    text = clean_text(" ".join(texts))
    confidence = confidence_of(kept) if kept else (sum(confidences) / len(confidences) if confidences else None)
    return Transcription(text=text, segments=kept, language=detected or language, confidence=confidence), len(pieces)
