"""What a month of interviews costs: shared auto-stopping workers or a machine per interview, local engine or OpenAI.

Capacities are the measured ones (docs/benchmarks.md); prices are inputs with the date they were read from the
providers' public price pages, each a flag, so a buyer can put in today's. Printed: one Markdown table with a
row per way of running, then the assumptions behind it.

    .venv/bin/python bench/cost.py [--interviews 1000] [--minutes 60] [--openai-per-min 0.003] ...
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields
from typing import Any

MONTH_H = 730.0  # hours in an average month


@dataclass(frozen=True)
class Prices:
    """US dollars, as listed on the providers' public price pages when `read_on` says."""

    read_on: str = "2025-06"
    fly_performance_2x_per_s: float = 0.0000239  # 2 dedicated CPUs, 4 GB: $62/month running
    fly_shared_1x_1gb_per_s: float = 0.0000022  # 1 shared CPU, 1 GB: $5.70/month running
    fly_shared_1x_512mb_per_s: float = 0.00000123  # 1 shared CPU, 512 MB: $3.19/month running
    openai_per_min: float = 0.003  # gpt-4o-mini-transcribe; whisper-1 and gpt-4o-transcribe: 0.006
    supabase_plan_per_month: float = 25.0  # Pro, with its compute credit covering the smallest database
    supabase_messages_included: float = 5_000_000
    supabase_per_million_messages: float = 2.5
    supabase_connections_included: float = 500
    supabase_per_thousand_connections: float = 10.0
    supabase_disk_included_gb: float = 8.0
    supabase_per_gb_month: float = 0.125


@dataclass(frozen=True)
class Workload:
    interviews: int = 1000  # a month
    minutes: float = 60.0  # each
    speakers: int = 2  # microphones per interview
    viewers: int = 2  # people watching each interview live, besides the speakers' own pages
    speech_fraction: float = 0.8  # of an interview's length someone is talking (only speech goes to the engine)
    utterance_s: float = 8.0  # a final line per utterance of about this long
    window_h: float = 220.0  # hours of the month interviews happen in: 22 working days of 10 hours
    peak_factor: float = 2.0  # the busiest hour against the window's average
    audio_kbps: float = 32.0  # WebM/Opus from the browser, per speaker
    audio_retention_days: float = 7.0  # AUDIO_RETENTION_DAYS


@dataclass(frozen=True)
class Capacity:
    """Measured on this repository's benchmarks (2 cores, the size the app machines run on)."""

    shared_remote: int = 150  # two-speaker interviews per worker with a remote engine, on Postgres
    shared_local: int = 4  # two-speaker interviews per worker transcribing with the bundled model (partials on)
    machine_overhead_s: float = 90.0  # a per-interview machine: start, model load, and up to a reaper pass after


@dataclass(frozen=True)
class Row:
    way: str
    app_machines: float
    interview_machines: float
    reaper: float
    engine: float
    supabase: float

    @property
    def total(self) -> float:
        return self.app_machines + self.interview_machines + self.reaper + self.engine + self.supabase


def interview_hours(work: Workload) -> float:
    return work.interviews * work.minutes / 60


def workers_up(work: Workload, per_worker: int) -> int:
    """Auto-stopping workers running through the window: enough for its busiest hour, at least one."""
    average = interview_hours(work) / work.window_h
    return max(1, math.ceil(average * work.peak_factor / per_worker))


def engine_cost(work: Workload, prices: Prices, local: bool) -> float:
    """OpenAI bills the audio sent: the speech the detector finds. The local engine costs only machine time."""
    return 0.0 if local else work.interviews * work.minutes * work.speech_fraction * prices.openai_per_min


def supabase_cost(work: Workload, prices: Prices, partials: bool) -> float:
    """The plan, Realtime messages past the included ones (each broadcast counts once per subscriber), peak
    connections past the included ones, and the audio kept for AUDIO_RETENTION_DAYS past the included disk."""
    speech_s = work.minutes * 60 * work.speech_fraction
    broadcasts = speech_s / work.utterance_s + (speech_s / 2 if partials else 0)  # a partial per 2 s chunk
    messages = work.interviews * broadcasts * (work.speakers + work.viewers)
    peak = interview_hours(work) / work.window_h * work.peak_factor * (work.speakers + work.viewers)
    audio_gb_month = work.interviews * work.speakers * work.minutes * 60 * work.audio_kbps / 8 / 1e6
    kept_gb = audio_gb_month * min(1.0, work.audio_retention_days / 30)
    return (
        prices.supabase_plan_per_month
        + max(0.0, messages - prices.supabase_messages_included) / 1e6 * prices.supabase_per_million_messages
        + max(0.0, peak - prices.supabase_connections_included) / 1e3 * prices.supabase_per_thousand_connections
        + max(0.0, kept_gb - prices.supabase_disk_included_gb) * prices.supabase_per_gb_month
    )


def costs(work: Workload, prices: Prices, capacity: Capacity) -> list[Row]:
    """A row per way of running the same month of interviews."""
    reaper = MONTH_H * 3600 * prices.fly_shared_1x_512mb_per_s  # one small machine that never stops
    window_s = work.window_h * 3600
    machine_s = work.interviews * (work.minutes * 60 + capacity.machine_overhead_s)
    rows = []
    for local in (False, True):
        engine = "local engine" if local else "OpenAI"
        per_worker = capacity.shared_local if local else capacity.shared_remote
        shared = workers_up(work, per_worker) * window_s * prices.fly_performance_2x_per_s
        rows.append(Row(f"shared workers, {engine}", shared, 0.0, reaper, engine_cost(work, prices, local),
                        supabase_cost(work, prices, partials=local)))  # fmt: skip
        # a machine per interview: the shared app only routes (one small machine through the window); the
        # interview's machine transcribes with the local model (2 dedicated CPUs) or only decodes and detects
        per_interview = prices.fly_performance_2x_per_s if local else prices.fly_shared_1x_1gb_per_s
        router = window_s * prices.fly_shared_1x_512mb_per_s
        rows.append(Row(f"per-interview machines, {engine}", router, machine_s * per_interview, reaper,
                        engine_cost(work, prices, local), supabase_cost(work, prices, partials=local)))  # fmt: skip
    return rows


def table(rows: list[Row], work: Workload) -> str:
    hours = interview_hours(work)
    lines = [
        "| way of running | Fly app machines | Fly interview machines | Fly reaper | engine | Supabase "
        "| total a month | per interview-hour |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        money = [row.app_machines, row.interview_machines, row.reaper, row.engine, row.supabase, row.total]
        cells = " | ".join(f"${value:,.2f}" for value in money)
        lines.append(f"| {row.way} | {cells} | ${row.total / hours:,.3f} |")
    return "\n".join(lines)


def assumptions(work: Workload, prices: Prices, capacity: Capacity) -> str:
    def listed(obj: Any) -> str:
        return ", ".join(f"{f.name}={getattr(obj, f.name)}" for f in fields(obj))

    return "\n".join(
        [
            f"- workload: {listed(work)}",
            f"- capacity (measured): {listed(capacity)}",
            f"- prices (inputs, read {prices.read_on}): {listed(prices)}",
        ]
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for group in (Workload, Prices, Capacity):
        for f in fields(group):
            default = f.default
            kind = type(default)
            parser.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=default, dest=f.name)
    return parser


def main(argv: list[str] | None = None) -> str:
    args = vars(_parser().parse_args(argv))
    work = Workload(**{f.name: args[f.name] for f in fields(Workload)})
    prices = Prices(**{f.name: args[f.name] for f in fields(Prices)})
    capacity = Capacity(**{f.name: args[f.name] for f in fields(Capacity)})
    report = f"{table(costs(work, prices, capacity), work)}\n\n{assumptions(work, prices, capacity)}"
    print(report)
    return report


if __name__ == "__main__":
    main()
