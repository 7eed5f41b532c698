"""The run record: what one run measured, computed from the harness's submit and
end times, the steps' own events, framework metadata and the monitor."""
from __future__ import annotations

import os

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from .monitor import Usage
from .workload import Workload

#: The run record's scalar figures, in the order tables show them.
FIGURES = (
    "wall_s",
    "startup_s",
    "compute_s",
    "overhead_s",
    "cpu_s",
    "peak_rss_bytes",
    "io_read_bytes",
    "io_write_bytes",
    "processes",
    "artifact_bytes",
)
#: Figures only some runs have: CPU of the run's containers, where counted.
OPTIONAL_FIGURES = ("container_cpu_s",)


@dataclass
class RunRecord:
    run_id: str
    architecture: str
    workload: str
    scale: str
    round: int
    warmup: bool
    outcome: str  # passed, failed, timeout
    submit_ns: int
    end_ns: int
    wall_s: float
    startup_s: float | None
    compute_s: float
    overhead_s: float
    cpu_s: float
    peak_rss_bytes: int
    io_read_bytes: int
    io_write_bytes: int
    processes: int
    artifact_bytes: int
    monitor_cpu_s: float
    error: str | None = None
    container_cpu_s: float | None = None
    gaps: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)

    def figures(self) -> dict[str, float]:
        """The scalar figures, the workload's own metrics included."""
        values = {name: getattr(self, name) for name in FIGURES + OPTIONAL_FIGURES}
        values.update(self.metrics)
        return {k: v for k, v in values.items() if v is not None}

    def to_dict(self) -> dict:
        return asdict(self)


def last_attempts(events: Iterable[Mapping]) -> dict[tuple[str, int | None], Mapping]:
    """The last attempt of every task, keyed ``(step, index)``."""
    tasks: dict = {}
    for event in sorted(events, key=lambda e: e["start_ns"]):
        tasks[(event["step"], event.get("index"))] = event
    return tasks


def critical_path_s(workload: Workload, tasks: Mapping[tuple[str, int | None], Mapping]) -> float:
    """Longest chain of step durations through the DAG; a fan-out step counts
    with its longest task, as if its tasks ran side by side."""
    longest: dict[str, float] = {}
    for step in workload.steps:
        spans = [(e["end_ns"] - e["start_ns"]) / 1e9 for (name, _), e in tasks.items() if name == step.name]
        own = max(spans, default=0.0)
        longest[step.name] = own + max((longest[n] for n in step.needs), default=0.0)
    return max(longest.values(), default=0.0)


def edge_gaps(workload: Workload, tasks: Mapping[tuple[str, int | None], Mapping]) -> dict[str, float]:
    """Per DAG edge, the last end of the upstream step to the first start of the next."""
    gaps = {}
    for up, down in workload.edges():
        ends = [e["end_ns"] for (name, _), e in tasks.items() if name == up]
        starts = [e["start_ns"] for (name, _), e in tasks.items() if name == down]
        if ends and starts:
            gaps[f"{up}->{down}"] = round((min(starts) - max(ends)) / 1e9, 6)
    return gaps


def step_rows(tasks, task_info, submit_ns: int) -> list[dict[str, Any]]:
    rows = []
    for key, event in sorted(tasks.items(), key=lambda kv: kv[1]["start_ns"]):
        info = task_info.get(key, {})
        row = {
            "step": event["step"],
            "index": event.get("index"),
            "start_s": round((event["start_ns"] - submit_ns) / 1e9, 6),
            "duration_s": round((event["end_ns"] - event["start_ns"]) / 1e9, 6),
            "cpu_s": round(event.get("cpu_s", 0.0), 6),
            "peak_rss_bytes": event.get("peak_rss_bytes", 0),
            "pid": event.get("pid"),
            "host": event.get("host"),
            "outcome": event.get("outcome"),
        }
        framework_start = info.get("started_ns") or info.get("created_ns")
        if info.get("queued_ns") and info.get("started_ns"):
            row["queue_delay_s"] = round((info["started_ns"] - info["queued_ns"]) / 1e9, 6)
        if framework_start:
            row["launch_delay_s"] = round((event["start_ns"] - framework_start) / 1e9, 6)
        row.update({k: v for k, v in info.items() if not k.endswith("_ns")})
        rows.append(row)
    return rows


def build_record(
    *,
    run_id: str,
    architecture: str,
    workload: Workload,
    scale: str,
    round: int,
    warmup: bool,
    submit_ns: int,
    end_ns: int,
    events: list[Mapping],
    usage: Usage,
    artifact_bytes: int,
    task_info: Mapping | None = None,
    outcome: str = "passed",
    error: str | None = None,
) -> RunRecord:
    tasks = last_attempts(events)
    wall_s = (end_ns - submit_ns) / 1e9
    compute_s = critical_path_s(workload, tasks)
    first_start = min((e["start_ns"] for e in tasks.values()), default=None)
    metrics: dict[str, float] = {}
    for event in tasks.values():
        metrics.update(event.get("metrics") or {})
    step_pids = {e.get("pid") for e in events} - usage.pids - {None}
    return RunRecord(
        run_id=run_id,
        architecture=architecture,
        workload=workload.name,
        scale=scale,
        round=round,
        warmup=warmup,
        outcome=outcome,
        error=error,
        submit_ns=submit_ns,
        end_ns=end_ns,
        wall_s=round_(wall_s),
        startup_s=None if first_start is None else round_((first_start - submit_ns) / 1e9),
        compute_s=round_(compute_s),
        overhead_s=round_(wall_s - compute_s),
        cpu_s=round_(usage.cpu_s),
        peak_rss_bytes=max([usage.peak_rss_bytes] + [e.get("peak_rss_bytes", 0) for e in events]),
        io_read_bytes=usage.io_read_bytes,
        io_write_bytes=usage.io_write_bytes,
        # processes the monitor saw start, plus step processes it missed (too
        # short-lived for the sampling interval, or on another host)
        processes=usage.processes + len(step_pids - {os.getpid()}),
        artifact_bytes=artifact_bytes,
        monitor_cpu_s=round_(usage.monitor_cpu_s),
        container_cpu_s=None if usage.container_cpu_s is None else round_(usage.container_cpu_s),
        gaps=edge_gaps(workload, tasks),
        metrics=metrics,
        steps=step_rows(tasks, task_info or {}, submit_ns),
    )


def round_(value: float) -> float:
    return round(value, 6)
