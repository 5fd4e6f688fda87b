"""The fuzzers' bridge fixture, and the summary line each fuzzer prints: what it tried and what it found."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fuzz.counts import summary_lines
from tests.fuzz.support import fuzz_settings, running


def pytest_terminal_summary(terminalreporter: Any) -> None:
    lines = summary_lines()
    if lines:
        terminalreporter.section("fuzz counts")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def fuzz_bridge(tmp_path: Path) -> Callable[..., Any]:
    """`with fuzz_bridge(**settings) as client:` a fresh embedded bridge in this test's data dir."""

    def open_bridge(**overrides: Any) -> Any:
        return running(fuzz_settings(tmp_path / "data", **overrides))

    return open_bridge
