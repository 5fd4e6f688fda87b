"""Word error rate of the live path: 2 s chunks against the whole file, same engine, same model.

Runs `interview-bridge transcribe` in-process (the very same live path) on the development set in
../shared/data (real speech, synthetic interview tracks) and on this repo's own fixtures, and prints corpus WER
for `--chunk-seconds 2` and `--chunk-seconds 0` with their ratio. Also prints the engine calls and the
real-time factor of the live path.

    .venv/bin/python bench/wer.py [--data ../shared/data] [--engine local] [--chunk-seconds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bridge.offline import ensure_tenant, transcribe_file  # noqa: E402
from bridge.services import build_services  # noqa: E402
from shared.audio.decode import decode_chunk  # noqa: E402
from shared.audio.formats import inspect_chunk  # noqa: E402
from shared.broadcast.local import LocalHub  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.stt.wer import corpus_wer  # noqa: E402


@dataclass
class Item:
    group: str
    path: Path
    reference: str


def dev_set(data: Path) -> list[Item]:
    items: list[Item] = []
    manifest = data / "manifest.tsv"
    if not manifest.exists():
        return items
    with manifest.open(encoding="utf-8") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["speaker_role"] == "none":
                continue
            group = "real" if row["relative_path"].startswith("real/") else "synthetic"
            items.append(Item(group, data / row["relative_path"], row["reference_text"]))
    return items


def own_fixtures() -> list[Item]:
    items = []
    for text_file in sorted((REPO / "tests" / "fixtures").rglob("*.txt")):
        for suffix in (".flac", ".wav"):
            audio = text_file.with_suffix(suffix)
            if audio.exists():
                items.append(Item("fixtures", audio, text_file.read_text(encoding="utf-8").strip()))
    return items


async def run(
    items: list[Item], engine: str, chunk_seconds: float
) -> tuple[dict[str, list[tuple[str, str]]], float, int]:
    results: dict[str, list[tuple[str, str]]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(_env_file=None, data_dir=Path(scratch), store="sqlite", stt_engine=engine, partials="off")  # type: ignore[call-arg]
        services = build_services(settings, broadcaster=LocalHub())
        await services.start()
        await services.transcriber.wait_ready()
        tenant = await ensure_tenant(services)
        started = time.perf_counter()
        for item in items:
            result = await transcribe_file(services, tenant, item.path, chunk_seconds)
            results.setdefault(item.group, []).append((item.reference, result.text))
        elapsed = time.perf_counter() - started
        calls = services.live.engine_calls
        await services.close()
    return results, elapsed, calls


def audio_seconds(items: list[Item]) -> float:
    total = 0.0
    for item in items:
        data = item.path.read_bytes()
        total += len(decode_chunk(data, inspect_chunk(data, None))) / 16000
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--engine", default="local")
    parser.add_argument("--chunk-seconds", type=float, default=2.0)
    args = parser.parse_args()
    items = dev_set(args.data) + own_fixtures()
    seconds = audio_seconds(items)
    print(f"{len(items)} files, {seconds:.1f} s of audio, engine {args.engine}")
    rows = {}
    for chunk in (0.0, args.chunk_seconds):
        results, elapsed, calls = asyncio.run(run(items, args.engine, chunk))
        rows[chunk] = results
        label = "whole file" if chunk == 0 else f"{chunk:g} s chunks"
        print(f"  {label:>12}: {elapsed:6.1f} s wall, RTF {elapsed / seconds:.3f}, {calls} engine calls")
    print(f"\n{'set':<10} {'whole':>8} {f'{args.chunk_seconds:g} s':>8} {'ratio':>7}")
    for group in ("real", "synthetic", "fixtures"):
        if group not in rows[0.0]:
            continue
        whole = corpus_wer(rows[0.0][group])
        chunked = corpus_wer(rows[args.chunk_seconds][group])
        ratio = chunked / whole if whole else float("nan")
        print(f"{group:<10} {whole:8.1%} {chunked:8.1%} {ratio:7.2f}x")


if __name__ == "__main__":
    main()
