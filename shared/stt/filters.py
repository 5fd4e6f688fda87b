"""Hallucination filter: drop segments that Whisper invents on silence, noise and tones.

Rules, per segment (openai/whisper's own thresholds, plus a phrase list that only counts with weak signals):
1. silent: `no_speech_prob > 0.6` and `avg_logprob < -1.0` (openai/whisper's skip rule);
2. repetition loop: `compression_ratio > 2.4`;
3. a known silence phrase ("Thank you.", "Thanks for watching!", "you", subtitle credits, "Woohoo!")
   whose decode also looks weak (`no_speech_prob > 0.3` or `avg_logprob < -0.7`): a confident
   "Thank you." from a real speaker survives. Engines without signals (gpt-4o models) keep such
   segments: gate their input with VAD instead;
4. nothing but a non-speech annotation ("[BLANK_AUDIO]", "(music)", "♪"), or no words at all.
"""

from __future__ import annotations

import dataclasses
import math
import re

from shared.stt.base import Segment, Transcription

__all__ = [
    "clean_text",
    "clean_transcription",
    "confidence_of",
    "is_silence_phrase",
    "keep_segment",
    "trim_prompt",
]

NO_SPEECH_THRESHOLD = 0.6
LOGPROB_THRESHOLD = -1.0
COMPRESSION_RATIO_THRESHOLD = 2.4
# A phrase from the list is dropped when either signal is at least this weak.
PHRASE_NO_SPEECH_THRESHOLD = 0.3
PHRASE_LOGPROB_THRESHOLD = -0.7
PROMPT_MAX_CHARS = 200

# Compared after `_phrase_key` (lower case, letters, digits and spaces only).
_SILENCE_PHRASES = frozenset(
    {
        "you",
        "thank you",
        "thank you very much",
        "thank you so much",
        "thanks",
        "thank you for watching",
        "thanks for watching",
        "thank you for watching and see you next time",
        "thank you so much for watching",
        "thanks for listening",
        "thank you for listening",
        "please subscribe",
        "please like and subscribe",
        "like and subscribe",
        "dont forget to like and subscribe",
        "see you next time",
        "see you in the next video",
        "bye",
        "bye bye",
        "goodbye",
        "so",
        "okay",
        "oh",
        "uh",
        "um",
        "hmm",
        "ah",
        "the end",
        "silence",
        "music",
    }
)
_SILENCE_PATTERNS = (
    re.compile(r"^w+h*o{2,}(?:h+o+)*h*$"),  # woohoo, wooooooh, whoo (not "who")
    re.compile(r"^(?:subtitles?|captions?|transcript(?:ion)?)\b.*\b(?:by|from)\b"),  # subtitle credits
    re.compile(r"^(?:subtitles?|captions?)\b.*\b(?:community|amara)\b"),
    re.compile(r"\bamara org\b"),
)
_ANNOTATION = re.compile(r"^\s*(?:[\[(][^\])]*[\])]|[♪♫♬#*]+|\s)+\s*$")
_WORD = re.compile(r"\w", re.UNICODE)


def _phrase_key(text: str) -> str:
    text = text.lower().replace("’", "'").replace("'", "")
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def is_silence_phrase(text: str) -> bool:
    """True for text Whisper is known to invent on silence or noise ("Thank you.", "you", subtitle credits)."""
    key = _phrase_key(text)
    if not key:
        return False
    return key in _SILENCE_PHRASES or any(pattern.search(key) for pattern in _SILENCE_PATTERNS)


def _weak(seg: Segment) -> bool:
    """True when the decoder itself doubts the segment; False when the engine gives no signals."""
    no_speech = seg.no_speech_prob is not None and seg.no_speech_prob > PHRASE_NO_SPEECH_THRESHOLD
    low_logprob = seg.avg_logprob is not None and seg.avg_logprob < PHRASE_LOGPROB_THRESHOLD
    return no_speech or low_logprob


def keep_segment(seg: Segment) -> bool:
    """Return False for a segment that is most likely a hallucination (see the module docstring)."""
    text = seg.text.strip()
    if not _WORD.search(text) or _ANNOTATION.match(text):
        return False
    if (
        seg.no_speech_prob is not None
        and seg.avg_logprob is not None
        and seg.no_speech_prob > NO_SPEECH_THRESHOLD
        and seg.avg_logprob < LOGPROB_THRESHOLD
    ):
        return False
    if seg.compression_ratio is not None and seg.compression_ratio > COMPRESSION_RATIO_THRESHOLD:
        return False
    return not (is_silence_phrase(text) and _weak(seg))


def clean_text(text: str) -> str:
    """Collapse runs of whitespace (including newlines) to single spaces and trim the ends."""
    return " ".join(text.split())


def trim_prompt(prompt: str | None, max_chars: int = PROMPT_MAX_CHARS) -> str | None:
    """Keep the last `max_chars` characters of a prompt, cut at a word boundary; None when nothing is left.

    Whisper only reads the final 224 tokens of a prompt; ~200 characters of committed text is what
    whisper_streaming passes too.
    """
    if not prompt:
        return None
    text = clean_text(prompt)
    if len(text) > max_chars:
        tail = text[-max_chars:]
        cut = tail.find(" ")
        text = tail[cut + 1 :] if 0 <= cut < len(tail) - 1 else tail
    return text or None


def clean_transcription(t: Transcription) -> Transcription:
    """Drop hallucinated segments and normalise whitespace; text, segments and confidence stay consistent.

    A transcription without segments (an engine that gives none) is judged on its text alone:
    annotations and empty text are dropped, phrases are kept (no signal says they are weak).
    """
    if not t.segments:
        whole = Segment(start=0.0, end=0.0, text=t.text)
        text = clean_text(t.text) if keep_segment(whole) else ""
        return dataclasses.replace(t, text=text, confidence=t.confidence if text else None)
    kept = tuple(dataclasses.replace(seg, text=clean_text(seg.text)) for seg in t.segments if keep_segment(seg))
    text = clean_text(" ".join(seg.text for seg in kept))
    return dataclasses.replace(t, text=text, segments=kept, confidence=confidence_of(kept) if kept else None)


def confidence_of(segments: tuple[Segment, ...]) -> float | None:
    """exp(mean avg_logprob) over segments that carry it, weighted by duration, clipped to [0, 1]."""
    weighted = [(s.avg_logprob, max(s.end - s.start, 0.01)) for s in segments if s.avg_logprob is not None]
    if not weighted:
        return None
    total = sum(w for _, w in weighted)
    mean = sum(lp * w for lp, w in weighted) / total
    return min(1.0, max(0.0, math.exp(mean)))
