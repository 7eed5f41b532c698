"""The per-architecture summary table, for the terminal and summary.md."""
from __future__ import annotations

import statistics
from typing import Sequence

from pytest_mlpbench.measure.record import RunRecord
from pytest_mlpbench.results.figures import parallel_overhead

FLOOR = "inprocess"


def medians(records: Sequence[RunRecord]) -> dict[str, float]:
    """Median of every figure over the measured rounds that passed."""
    measured = [r for r in records if not r.warmup and r.outcome == "passed"]
    names = dict.fromkeys(n for r in measured for n in r.figures())
    return {n: statistics.median(r.figures()[n] for r in measured if n in r.figures()) for n in names}


def grouped(records: Sequence[RunRecord]) -> dict[tuple[str, str], list[RunRecord]]:
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for record in records:
        groups.setdefault((record.workload, record.architecture), []).append(record)
    return groups


def summary_rows(records: Sequence[RunRecord]) -> list[dict]:
    """One row per (workload, architecture): medians, failures, and overhead
    beyond the ``inprocess`` floor's on the same workload, each without the
    part caused by running fan-out tasks one after another (``serial_s``)."""
    groups = grouped(records)
    rows = []
    for (workload, arch), group in groups.items():
        row = {"workload": workload, "architecture": arch, **medians(group)}
        row["runs"] = sum(not r.warmup for r in group)
        row["failed"] = sum(r.outcome != "passed" for r in group)
        floor = medians(groups.get((workload, FLOOR), []))
        if "overhead_s" in floor and "overhead_s" in row:
            row["overhead_over_inprocess_s"] = parallel_overhead(row) - parallel_overhead(floor)
        rows.append(row)
    return rows


TABLE = [
    ("architecture", "architecture", str),
    ("workload", "workload", str),
    ("wall_s", "wall (s)", "{:.3f}".format),
    ("startup_s", "startup (s)", "{:.3f}".format),
    ("compute_s", "compute (s)", "{:.3f}".format),
    ("overhead_s", "overhead (s)", "{:.3f}".format),
    ("serial_s", "serial (s)", "{:.3f}".format),
    ("overhead_over_inprocess_s", "over inprocess (s)", "{:+.3f}".format),
    ("cpu_s", "CPU (s)", "{:.2f}".format),
    ("peak_rss_bytes", "peak mem (MiB)", lambda b: f"{b / 2**20:.0f}"),
    ("runs", "runs", str),
    ("failed", "failed", str),
]


def table_cells(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    headers = [title for _, title, _ in TABLE]
    cells = [[fmt(row[key]) if row.get(key) is not None else "-" for key, _, fmt in TABLE] for row in rows]
    return headers, cells


def terminal_table(records: Sequence[RunRecord]) -> list[str]:
    headers, cells = table_cells(summary_rows(records))
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = lambda values: "  ".join(v.rjust(w) if i > 1 else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths)))
    return [line(headers), "-" * len(line(headers)), *(line(c) for c in cells)]


def summary_markdown(records: Sequence[RunRecord]) -> str:
    headers, cells = table_cells(summary_rows(records))
    lines = ["# mlpbench summary", "", "Medians over the measured rounds that passed.", ""]
    lines += ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(c) + " |" for c in cells]
    failures = [r for r in records if r.outcome != "passed"]
    if failures:
        lines += ["", "## Failed runs", ""]
        lines += [f"- `{r.run_id}` ({r.outcome}): {(r.error or '').splitlines()[0] if r.error else ''}" for r in failures]
    return "\n".join(lines) + "\n"
