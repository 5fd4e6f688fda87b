"""The browser client's sending rules, tested in Node's test runner (tests/js/) against a fake fetch."""

from __future__ import annotations

import re
import shutil
import subprocess

from tests.test_server_process import REPO


def test_client_module_rules_hold_under_node() -> None:
    """Order, retries under the same sequence number, Retry-After, refusals, a closed session, WAV and level
    helpers: every case in tests/js passes, and none is skipped."""
    node = shutil.which("node")
    assert node, "node is missing: the test script installs it"
    run = subprocess.run([node, "--test", "tests/js/"], cwd=REPO, capture_output=True, text=True, timeout=120)
    summary = dict(re.findall(r"^# (tests|pass|fail|skipped|todo) (\d+)$", run.stdout, flags=re.M))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert int(summary["tests"]) >= 7 and summary["fail"] == "0" and summary["skipped"] == "0", summary
