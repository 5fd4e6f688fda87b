"""bench/cost.py: the monthly bill for each way of running, from measured capacity and dated prices."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from bench.cost import Capacity, Prices, Workload, costs, main, workers_up

REPO = Path(__file__).resolve().parents[1]


def by_way(work: Workload, prices: Prices | None = None, capacity: Capacity | None = None) -> dict[str, float]:
    return {row.way: row.total for row in costs(work, prices or Prices(), capacity or Capacity())}


def test_openai_bills_the_speech_minutes_and_the_local_engine_bills_none() -> None:
    """The OpenAI rows pay the price per minute of detected speech; the local rows pay no engine at all."""
    work, prices = Workload(interviews=100, minutes=30, speech_fraction=0.5), Prices(openai_per_min=0.006)
    engines = {row.way: row.engine for row in costs(work, prices, Capacity())}
    assert engines["shared workers, OpenAI"] == pytest.approx(100 * 30 * 0.5 * 0.006)
    assert engines["per-interview machines, OpenAI"] == engines["shared workers, OpenAI"]
    assert engines["shared workers, local engine"] == engines["per-interview machines, local engine"] == 0


def test_a_machine_per_interview_is_billed_for_each_interview_and_its_start() -> None:
    """Per-interview machines cost interviews x (length + overhead) x the machine's price per second."""
    work, prices, capacity = Workload(interviews=40, minutes=45), Prices(), Capacity(machine_overhead_s=60)
    rows = {row.way: row for row in costs(work, prices, capacity)}
    seconds = 40 * (45 * 60 + 60)
    assert rows["per-interview machines, local engine"].interview_machines == pytest.approx(
        seconds * prices.fly_performance_2x_per_s
    )
    assert rows["per-interview machines, OpenAI"].interview_machines == pytest.approx(
        seconds * prices.fly_shared_1x_1gb_per_s
    )


def test_shared_workers_grow_with_the_busiest_hour_against_measured_capacity() -> None:
    """Enough auto-stopping workers for the peak, never none: fewer interviews per worker means more workers."""
    work = Workload(interviews=2_200, minutes=60, window_h=220, peak_factor=2.0)  # 10 at once, 20 at the peak
    assert workers_up(work, 150) == 1
    assert workers_up(work, 6) == 4
    assert workers_up(dataclasses.replace(work, interviews=1), 150) == 1
    cheap, dear = by_way(work, capacity=Capacity(shared_local=20)), by_way(work, capacity=Capacity(shared_local=5))
    assert dear["shared workers, local engine"] > cheap["shared workers, local engine"]


def test_the_docs_show_the_table_the_script_prints() -> None:
    """docs/costs.md holds exactly the table and assumptions `bench/cost.py` prints with its defaults."""
    report = main([])
    assert report in (REPO / "docs" / "costs.md").read_text(encoding="utf-8")
    assert report.count("\n| ") == 4  # four ways of running under the header
