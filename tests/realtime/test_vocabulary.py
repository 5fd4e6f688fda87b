"""The realtime vocabulary (topic and the bridge's events) is spelled once and matches the public contract."""

from __future__ import annotations

import re
from pathlib import Path

from shared.broadcast import vocabulary
from shared.broadcast.vocabulary import RESERVED_EVENTS, session_id_of, session_topic

REPO = Path(__file__).resolve().parents[2]
SPELLINGS = re.compile(r"""["'](transcript_entry|transcript_partial|session_status)["']|f?["']session:""")


def test_topic_and_events_are_the_contracts_names() -> None:
    """Subscribers join `session:{id}` and hear transcript_entry, transcript_partial and session_status."""
    assert session_topic("abc") == "session:abc"
    assert session_id_of(session_topic("abc")) == "abc"
    assert session_id_of("tenant:abc") is None
    assert {"transcript_entry", "transcript_partial", "session_status"} == RESERVED_EVENTS


def test_no_other_module_spells_the_vocabulary_out() -> None:
    """Every sender, subscriber and access check imports the names instead of repeating them."""
    own = Path(vocabulary.__file__).resolve()
    offenders = [
        f"{path.relative_to(REPO)}:{number}"
        for package in ("shared", "functions", "bridge")
        for path in sorted((REPO / package).rglob("*.py"))
        if path.resolve() != own
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if SPELLINGS.search(line)
    ]
    assert offenders == []
