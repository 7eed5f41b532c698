"""Figures over several runs: medians, the typical run, overhead without serial fan-out."""
from __future__ import annotations

import statistics
from typing import Sequence


def median_of(runs: Sequence[dict], name: str) -> float | None:
    values = [r[name] if name in r else r["metrics"].get(name) for r in runs if r["outcome"] == "passed"]
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def typical_run(runs: Sequence[dict]) -> dict | None:
    """The passed run with the median wall time: the one whose timeline is drawn."""
    passed = sorted((r for r in runs if r["outcome"] == "passed" and r["steps"]), key=lambda r: r["wall_s"])
    return passed[(len(passed) - 1) // 2] if passed else None


def parallel_overhead(figures: dict) -> float:
    """Overhead without the part caused by running fan-out tasks one after another."""
    return figures["overhead_s"] - (figures.get("serial_s") or 0.0)
