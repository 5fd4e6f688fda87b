"""Transcript renderings for `GET /sessions/{id}/transcript?format=text|vtt|srt`."""

from __future__ import annotations

from collections.abc import Sequence

from shared.models import TranscriptEntry


def _clock(ms: int | None, sep: str) -> str:
    ms = max(0, ms or 0)
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{sep}{millis:03d}"


def _span(entry: TranscriptEntry) -> tuple[int, int]:
    start = entry.start_ms or 0
    end = entry.end_ms if entry.end_ms is not None and entry.end_ms > start else start + 1000
    return start, end


def as_text(entries: Sequence[TranscriptEntry]) -> str:
    return "".join(f"{e.speaker}: {e.text}\n" for e in entries)


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def as_vtt(entries: Sequence[TranscriptEntry]) -> str:
    cues = ["WEBVTT", ""]
    for entry in entries:
        start, end = _span(entry)
        cues += [
            f"{_clock(start, '.')} --> {_clock(end, '.')}",
            f"<v {_vtt_escape(entry.speaker)}>{_vtt_escape(entry.text)}",
            "",
        ]
    return "\n".join(cues)


def as_srt(entries: Sequence[TranscriptEntry]) -> str:
    cues: list[str] = []
    for index, entry in enumerate(entries, start=1):
        start, end = _span(entry)
        cues += [str(index), f"{_clock(start, ',')} --> {_clock(end, ',')}", f"{entry.speaker}: {entry.text}", ""]
    return "\n".join(cues)
