"""Cold start, as a Fly machine starting from `stop` sees it: `python bench/cold_start.py [--runs 5]`.

Per run, a fresh process on a fresh data dir: the time from spawning it to the first 200 from `/health`, for a
bare Litestar app on uvicorn (`bench/load.py --serve-bare`) and for `interview-bridge serve` with the simulate and
the local engine; for the local engine also the time until `/health` says `ready: true` (the model loaded: the
port opens before that, and chunks that come meanwhile are stored `queued`). Medians are printed, with the
bridge's ratio to bare (target: within 1.5x). Nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
if str(REPO) not in sys.path:  # run as a script: the repository's bench package beside it
    sys.path.insert(0, str(REPO))

from bench.throughput import free_port  # noqa: E402


def start(kind: str, port: int, data_dir: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SUPABASE_URL", "OPENAI_API_KEY")}
    env.update({"DATA_DIR": str(data_dir), "PORT": str(port), "HOST": "127.0.0.1", "STORE": "sqlite"})
    if kind == "bare":
        command = [sys.executable, str(REPO / "bench" / "load.py"), "--serve-bare", str(port)]
    else:
        command = [str(BIN / "interview-bridge"), "serve", "--engine", kind]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def one_run(kind: str) -> tuple[float, float | None]:
    """(seconds to the first /health 200, seconds to ready: true or None when the answer has no `ready`)."""
    port = free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        spawned = time.perf_counter()
        process = start(kind, port, Path(data_dir))
        first: float | None = None
        try:
            with httpx.Client(timeout=2) as client:
                while time.perf_counter() - spawned < 120:
                    try:
                        answer = client.get(f"http://127.0.0.1:{port}/health")
                    except httpx.HTTPError:
                        time.sleep(0.005)
                        continue
                    now = time.perf_counter() - spawned
                    if answer.status_code == 200:
                        first = first if first is not None else now
                        ready = answer.json().get("ready")
                        if ready is None or ready:
                            return first, None if ready is None else now
                    time.sleep(0.02)
            raise RuntimeError(f"{kind}: no healthy answer within 120 s")
        finally:
            process.terminate()
            process.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--kinds", default="bare,simulate,local", help="comma-separated: bare, simulate, local")
    args = parser.parse_args()
    medians: dict[str, tuple[float, float | None]] = {}
    for kind in args.kinds.split(","):
        runs = [one_run(kind) for _ in range(args.runs)]
        first = statistics.median(r[0] for r in runs)
        readies = [r[1] for r in runs if r[1] is not None]
        medians[kind] = (first, statistics.median(readies) if readies else None)
    bare = medians.get("bare", (None, None))[0]
    print(f"cold start, median of {args.runs} runs each (spawn to the first /health 200; to ready: true)")
    for kind, (first, ready) in medians.items():
        ratio = f"{first / bare:.2f}x bare" if bare and kind != "bare" else ""
        ready_text = f"ready after {ready:.2f} s" if ready is not None else ""
        print(f"  {kind:<9} first /health {first:6.2f} s  {ratio:<10} {ready_text}")


if __name__ == "__main__":
    main()
