"""Field rules shared by the request models of every function."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from shared.errors import InvalidRequest

MAX_SEQUENCE = 2**31 - 1


def check_speaker(value: str) -> str:
    """1 to 64 characters; letters of any script are welcome, control and format characters are not."""
    if not 1 <= len(value) <= 64:
        raise ValueError("speaker must be 1 to 64 characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf") for ch in value):
        raise ValueError("speaker must not contain control or format characters")
    if not value.strip():
        raise ValueError("speaker must not be blank")
    return value


def check_declared_speaker(declared: Sequence[str], speaker: str) -> None:
    """A session created with `speakers` takes audio and entries from those speakers only (a typo would otherwise
    start a stray speaker stream); a session without them takes any speaker."""
    if declared and speaker not in declared:
        names = ", ".join(repr(name) for name in declared)
        raise InvalidRequest(f"speaker {speaker!r} is not one of this session's speakers ({names})")
