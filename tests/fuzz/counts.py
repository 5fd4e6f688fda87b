"""What the fuzzers tried and found, printed as one line per fuzzer at the end of the run (conftest.py's hook).

Counts are taken before a test asserts, so a failing run still reports what it saw.
"""

from __future__ import annotations

from collections import Counter


class Tally:
    """Named counters of one fuzzer, printed in a fixed order: `fuzz NAME: 12 requests, 0 server errors, ...`."""

    def __init__(self, name: str, labels: dict[str, str]) -> None:
        self.name = name
        self.labels = labels  # counter key -> how the summary line names it
        self.counts: Counter[str] = Counter()

    def add(self, key: str, amount: int = 1) -> None:
        if key not in self.labels:
            raise KeyError(f"fuzz {self.name} has no counter {key!r}")
        self.counts[key] += amount

    def __getitem__(self, key: str) -> int:
        return self.counts[key]

    def line(self) -> str:
        return f"fuzz {self.name}: " + ", ".join(f"{self.counts[key]} {label}" for key, label in self.labels.items())


TALLIES: dict[str, Tally] = {}


def tally(name: str, **labels: str) -> Tally:
    """The fuzzer's tally, registered on first use (in the order the summary prints them)."""
    found = TALLIES.get(name)
    if found is None:
        found = TALLIES[name] = Tally(name, labels)
    return found


def summary_lines() -> list[str]:
    return [t.line() for t in TALLIES.values() if t.counts]
