"""The run record: what one run measured, computed from the harness's submit and
end times, the steps' own events, framework metadata and the monitor."""
from __future__ import annotations

import os

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from pytest_mlpbench.measure.monitor import Usage
from pytest_mlpbench.model.workload import Workload

#: The run record's scalar figures, in the order tables show them.
FIGURES = (
    "wall_s",
    "startup_s",
    "compute_s",
    "overhead_s",
    "serial_s",
    "cpu_s",
    "peak_rss_bytes",
    "io_read_bytes",
    "io_write_bytes",
    "processes",
    "artifact_bytes",
)
#: Figures only some runs have: CPU of the run's containers, where counted;
#: page cache charged to the run, where the memory method counts it.
OPTIONAL_FIGURES = ("container_cpu_s", "page_cache_bytes")


@dataclass
class RunRecord:
    run_id: str
    architecture: str
    workload: str
    scale: str
    round: int
    warmup: bool
    outcome: str  # passed, failed, timeout, interrupted
    submit_ns: int  # wall clock at submit: aligns the steps' own timestamps
    end_ns: int  # submit_ns + the monotonic duration
    wall_s: float  # monotonic
    startup_s: float | None
    compute_s: float
    overhead_s: float
    serial_s: float
    cpu_s: float
    peak_rss_bytes: int
    io_read_bytes: int
    io_write_bytes: int
    processes: int
    artifact_bytes: int
    monitor_cpu_s: float
    memory_method: str
    error: str | None = None
    container_cpu_s: float | None = None
    page_cache_bytes: int | None = None
    params: dict[str, Any] = field(default_factory=dict)
    clock_skew_s: dict[str, float] = field(default_factory=dict)
    unreliable: list[str] = field(default_factory=list)
    gaps: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: The cores the run was pinned to (a pytest-xdist worker's); empty: not pinned.
    cores: list[int] = field(default_factory=list)
    host: str = ""  # the machine the run was measured on
    worker: str = ""  # the pytest-xdist worker that measured it ("": no xdist)
    #: How files reached the next steps: shared (one directory) or native (the framework's data layer).
    handoff: str = "shared"

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


def serial_s(workload: Workload, tasks: Mapping[tuple[str, int | None], Mapping]) -> float:
    """The part of the overhead caused by running a fan-out's tasks one after
    another: per fan-out step, the time any of its tasks was running, less its
    longest task (zero when they ran side by side)."""
    total = 0.0
    for step in workload.steps:
        if step.foreach:
            spans = sorted((e["start_ns"], e["end_ns"]) for (name, _), e in tasks.items() if name == step.name)
            if spans:
                total += (busy_ns(spans) - max(end - start for start, end in spans)) / 1e9
    return total


def busy_ns(spans: list[tuple[int, int]]) -> int:
    """Length of the union of sorted ``(start, end)`` spans."""
    busy, reach = 0, None
    for start, end in spans:
        if reach is None or start > reach:
            busy += end - start
            reach = end
        elif end > reach:
            busy += end - reach
            reach = end
    return busy


def clock_skew_s(tasks: Mapping[tuple[str, int | None], Mapping], submit_ns: int, end_ns: int) -> dict[str, float]:
    """Per host, how far its step timestamps fall outside the harness's
    submit..end window: a lower bound of how far its clock is off ours."""
    skew: dict[str, float] = {}
    for event in tasks.values():
        outside = max(0, submit_ns - event["start_ns"], event["end_ns"] - end_ns) / 1e9
        host = event.get("host") or "?"
        skew[host] = max(skew.get(host, 0.0), outside)
    return skew


def unreliable_figures(workload: Workload, tasks, skew: Mapping[str, float], startup: float | None,
                       gaps: Mapping[str, float]) -> list[str]:
    """The figures that compare two clocks and are smaller than those clocks' known skew."""
    def off(*hosts: str) -> float:
        return sum(skew.get(h, 0.0) for h in set(hosts))

    found = []
    if tasks and startup is not None:
        first = min(tasks.values(), key=lambda e: e["start_ns"])
        if off(first.get("host") or "?") > abs(startup):
            found.append("startup_s")
    for up, down in workload.edges():
        key = f"{up}->{down}"
        hosts = [e.get("host") or "?" for (name, _), e in tasks.items() if name in (up, down)]
        if key in gaps and len(set(hosts)) > 1 and off(*hosts) > abs(gaps[key]):
            found.append(f"gaps.{key}")
    return found


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
    wall_ns: int,
    events: list[Mapping],
    usage: Usage,
    artifact_bytes: int,
    params: Mapping[str, Any] | None = None,
    task_info: Mapping | None = None,
    outcome: str = "passed",
    error: str | None = None,
) -> RunRecord:
    """``submit_ns`` is the wall clock at submit, ``wall_ns`` the run's monotonic duration."""
    tasks = last_attempts(events)
    end_ns = submit_ns + wall_ns
    wall_s = wall_ns / 1e9
    compute_s = critical_path_s(workload, tasks)
    first_start = min((e["start_ns"] for e in tasks.values()), default=None)
    startup_s = None if first_start is None else round_((first_start - submit_ns) / 1e9)
    gaps = edge_gaps(workload, tasks)
    skew = clock_skew_s(tasks, submit_ns, end_ns)
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
        startup_s=startup_s,
        compute_s=round_(compute_s),
        overhead_s=round_(wall_s - compute_s),
        serial_s=round_(serial_s(workload, tasks)),
        cpu_s=round_(usage.cpu_s),
        peak_rss_bytes=usage.peak_rss_bytes,
        memory_method=usage.memory_method,
        page_cache_bytes=usage.page_cache_bytes,
        io_read_bytes=usage.io_read_bytes,
        io_write_bytes=usage.io_write_bytes,
        # processes the monitor saw start, plus step processes it missed (too
        # short-lived for the sampling interval, or on another host)
        processes=usage.processes + len(step_pids - {os.getpid()}),
        artifact_bytes=artifact_bytes,
        monitor_cpu_s=round_(usage.monitor_cpu_s),
        container_cpu_s=None if usage.container_cpu_s is None else round_(usage.container_cpu_s),
        params=dict(params or {}),
        clock_skew_s={host: round_(s) for host, s in skew.items()},
        unreliable=unreliable_figures(workload, tasks, skew, startup_s, gaps),
        gaps=gaps,
        metrics=metrics,
        steps=step_rows(tasks, task_info or {}, submit_ns),
    )


def round_(value: float) -> float:
    return round(value, 6)
