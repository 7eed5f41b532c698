"""Step events: one JSON line per step attempt, written by the step itself.

Every architecture runs a step through :func:`execute_step`, in whatever
process, pod or worker it uses, so every step reports its own times the
same way. The sink is the file named by ``MLPBENCH_EVENTS`` (or by the run
spec); each event is appended with one ``write`` on an ``O_APPEND``
descriptor, so concurrent tasks do not interleave lines.
"""
from __future__ import annotations

import json
import os
import resource
import time
from collections.abc import Mapping
from pathlib import Path

from pytest_mlpbench.model.workload import RunSpec, StepContext, load_workload

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing typing costs every task's process 3 ms
    from typing import Any

EVENTS_ENV = "MLPBENCH_EVENTS"
TRACEPARENT_ENV = "TRACEPARENT"


def _cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _reset_peak_rss() -> bool:
    """Reset this process's high-water mark (Linux ``clear_refs`` 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _children_maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def new_traceparent() -> str:
    """The W3C traceparent of a new run's root span (a new trace)."""
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def step_span(traceparent: str | None) -> dict[str, str] | None:
    """This task's span in the run's trace: a new span id under the W3C
    ``traceparent`` of the run; ``None`` without a valid one. Plain strings,
    no OpenTelemetry import: the harness exports the span from the event."""
    parts = (traceparent or "").strip().lower().split("-")
    if len(parts) < 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or parts[0] == "ff":
        return None
    try:
        if not int(parts[1], 16) or not int(parts[2], 16):
            return None
        int(parts[3][:2], 16)
    except ValueError:
        return None
    span_id = "0" * 16
    while span_id == "0" * 16:
        span_id = os.urandom(8).hex()
    return {"trace_id": parts[1], "span_id": span_id, "parent_span_id": parts[2], "trace_flags": parts[3][:2]}


class _traced:
    """Make the task's span the ``TRACEPARENT`` of what the step starts."""

    def __init__(self, span: dict[str, str] | None):
        self.span = span

    def __enter__(self):
        if self.span:
            self.old = os.environ.get(TRACEPARENT_ENV)
            os.environ[TRACEPARENT_ENV] = f"00-{self.span['trace_id']}-{self.span['span_id']}-{self.span['trace_flags']}"

    def __exit__(self, *exc):
        if self.span:
            if self.old is None:
                os.environ.pop(TRACEPARENT_ENV, None)
            else:
                os.environ[TRACEPARENT_ENV] = self.old


def append_event(path: str | os.PathLike, event: Mapping[str, Any]) -> None:
    line = (json.dumps(event, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_events(path: str | os.PathLike, run_id: str | None = None) -> list[dict]:
    """Read a sink back; a torn last line (a killed writer) is skipped."""
    events = []
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return events
    for line in text.splitlines():
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue
        if run_id is None or event.get("run_id") == run_id:
            events.append(event)
    return events


def execute_step(spec: RunSpec, step_name: str, inputs: Mapping[str, Any], index: int | None = None) -> dict:
    """Run one task of a step, record its event, and return its outputs.

    ``inputs`` are the step's merged inputs (for a fan-out task, already
    narrowed to its ``item``). Exceptions propagate after the event is written.
    """
    workload = load_workload(spec.workload)
    fn = workload.step(step_name).resolve()
    ctx = StepContext(spec=spec, step=step_name, index=index)
    sink = os.environ.get(EVENTS_ENV) or spec.events
    exact_peak = _reset_peak_rss()
    kids_peak_before = _children_maxrss_bytes()
    event: dict[str, Any] = {
        "run_id": spec.run_id,
        "step": step_name,
        "index": index,
        "pid": os.getpid(),
        "host": os.uname().nodename,
    }
    span = step_span(spec.traceparent or os.environ.get(TRACEPARENT_ENV))
    if span:
        event["span"] = span
    cpu0 = _cpu_s()
    event["start_ns"] = time.time_ns()
    try:
        with _traced(span):
            outputs = fn(ctx, **inputs)
        if not isinstance(outputs, dict):
            raise TypeError(f"step {step_name!r} returned {type(outputs).__name__}, not a dict")
        json.dumps(outputs)  # fail here, not in the next process, if an output cannot travel
        event["outcome"] = "passed"
        return outputs
    except BaseException as exc:
        import traceback  # only on failure: every task's process imports this module

        event["outcome"] = "failed"
        event["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        raise
    finally:
        event["end_ns"] = time.time_ns()
        event["cpu_s"] = _cpu_s() - cpu0
        peak = _peak_rss_bytes() if exact_peak else 0
        kids_peak = _children_maxrss_bytes()
        if kids_peak > kids_peak_before:  # a child reaped during this step set a new high
            peak = max(peak, kids_peak)
        event["peak_rss_bytes"] = peak
        event["metrics"] = ctx.metrics
        append_event(sink, event)
