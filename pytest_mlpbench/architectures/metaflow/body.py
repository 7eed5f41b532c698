"""What every step of a generated flow runs, inside Metaflow's task process.

The workload's outputs travel as the artifact ``mlpb_outputs`` (step name ->
outputs, or the list of a fan-out step's task outputs in task order); each
step runs through :func:`pytest_mlpbench.step.run_step`, which merges the ones it needs and
writes the step event. With ``ship=True`` (remote tasks, which see neither
the harness's event file nor its artifact directory) the events and the
files under the run's artifact directory travel as artifacts too.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from pytest_mlpbench.model.workload import RunSpec, fanout_items, load_workload, step_inputs
from pytest_mlpbench.step import run_step
from pytest_mlpbench.step.events import EVENTS_ENV, read_events


def step(flow, name: str | None, *, index: int | None = None, inputs: Iterable | None = None,
         join: str | None = None, split_for: str | None = None, ship: bool = False) -> None:
    """Run workload step ``name`` (None: only join or split) as this Metaflow task."""
    spec = RunSpec.from_json(flow.mlpb_spec)
    if join is not None:
        inputs = sorted(inputs, key=lambda task: task.mlpb_index)
        flow.mlpb_outputs = {**inputs[0].mlpb_outputs, join: [task.mlpb_outputs[join] for task in inputs]}
        if ship:
            flow.mlpb_files = {k: v for task in inputs for k, v in task.mlpb_files.items()}
    outputs = dict(getattr(flow, "mlpb_outputs", {}))
    if ship:
        flow.mlpb_events = []
    if name is not None:
        if ship:
            outputs[name] = _shipped(flow, spec, name, outputs, index)
        else:
            outputs[name] = run_step(spec, name, outputs, index)
        if index is not None:
            flow.mlpb_index = index
    flow.mlpb_outputs = outputs
    if split_for is not None:
        workload = load_workload(spec.workload)
        fanned = workload.step(split_for)
        flow.mlpb_items = list(range(len(fanout_items(fanned, step_inputs(workload, fanned, outputs)))))


def _shipped(flow, spec: RunSpec, name: str, upstream: dict, index: int | None) -> dict:
    """Run the task with a local event sink and artifact directory, and keep
    both as artifacts for the harness and the next steps."""
    files = getattr(flow, "mlpb_files", {})
    Path(spec.artifacts).mkdir(parents=True, exist_ok=True)
    restore_files(spec.artifacts, files)
    before = snapshot(spec.artifacts)
    sink = Path(tempfile.mkdtemp(prefix="mlpbench-events-")) / "events.jsonl"
    os.environ[EVENTS_ENV] = str(sink)
    try:
        outputs = run_step(spec, name, upstream, index)
    finally:
        flow.mlpb_events = read_events(sink)
    flow.mlpb_files = {**files, **changed_files(spec.artifacts, before)}
    return outputs


def snapshot(root: str) -> dict[str, tuple[int, int]]:
    found = {}
    for path in Path(root).rglob("*"):
        if path.is_file():
            st = path.stat()
            found[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return found


def changed_files(root: str, before: dict[str, Any]) -> dict[str, bytes]:
    after = snapshot(root)
    return {rel: (Path(root) / rel).read_bytes() for rel, stat in after.items() if before.get(rel) != stat}


def restore_files(root: str, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = Path(root) / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
