"""The fault tests' counts: each test reports what it injected and what was lost; the run prints them at the end."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.faults.support import Tally

REPORTS: list[str] = []


@pytest.fixture
def report(record_property: Callable[[str, object], None]) -> Callable[[Tally], None]:
    """`report(tally)`: the test's counts, as junit properties and as a line of the run's summary."""

    def record(tally: Tally) -> None:
        for name, value in tally.counts().items():
            record_property(name, value)
        line = tally.line()
        REPORTS.append(line)
        print(line)

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.section("injected faults")
        for line in REPORTS:
            terminalreporter.write_line(line)
