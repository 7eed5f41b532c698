"""What every step of a generated flow runs, inside Metaflow's task process.

The workload's outputs travel as the artifact ``mlpb_outputs`` (step name ->
outputs, or the list of a fan-out step's task outputs in task order); each
step runs through :func:`pytest_mlpbench.step.run_step`, which merges the ones it needs and
writes the step event. With ``ship=True`` (remote tasks, which see neither
the harness's event file nor its artifact directory) the events and the
files under the run's artifact directory travel as artifacts too.

Native hand-off (``RunSpec.handoff == "native"``): each task writes into a
directory of its own, ``<run artifacts>/<KEY>``, and its files (rel path ->
bytes) become one Metaflow artifact of that task, :func:`files_artifact` of
its KEY; ``mlpb_handoff`` lists the KEYs so far. Metaflow passes unchanged
artifacts on to the next tasks by reference, and a join takes its branches'
ones with ``merge_artifacts``; so the bytes are pickled, gzipped and written to
the datastore once, by the task that wrote them. A task loads the artifacts
of the KEYs its inputs name from the datastore into ``<run dir>/carried/<its
KEY>/<KEY>`` (removed when it ends) and runs with ``carried=`` those
directories. A loaded artifact is dropped from the flow again, so that
Metaflow does not pickle and hash it once more when the task ends.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

from pytest_mlpbench.model.workload import RunSpec, fanout_items, load_workload, step_inputs
from pytest_mlpbench.step import handoff, run_step, task_spec
from pytest_mlpbench.step.events import EVENTS_ENV, read_events


def step(flow, name: str | None, *, index: int | None = None, inputs: Iterable | None = None,
         join: str | None = None, split_for: str | None = None, ship: bool = False) -> None:
    """Run workload step ``name`` (None: only join or split) as this Metaflow task."""
    spec = RunSpec.from_json(flow.mlpb_spec)
    native = spec.handoff == "native"
    if join is not None:
        inputs = sorted(inputs, key=lambda task: task.mlpb_index)
        flow.mlpb_outputs = {**inputs[0].mlpb_outputs, join: [task.mlpb_outputs[join] for task in inputs]}
        if native:
            merge_handoff(flow, inputs)
        elif ship:
            flow.mlpb_files = {k: v for task in inputs for k, v in task.mlpb_files.items()}
    outputs = dict(getattr(flow, "mlpb_outputs", {}))
    if ship:
        flow.mlpb_events = []
    if name is not None:
        if native:
            outputs[name] = _native(flow, spec, name, outputs, index, ship)
        elif ship:
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
    with shipped_events(flow):
        outputs = run_step(spec, name, upstream, index)
    flow.mlpb_files = {**files, **changed_files(spec.artifacts, before)}
    return outputs


@contextlib.contextmanager
def shipped_events(flow):
    """Send the task's step events to a local sink, and keep them as the artifact ``mlpb_events``."""
    sink = Path(tempfile.mkdtemp(prefix="mlpbench-events-")) / "events.jsonl"
    os.environ[EVENTS_ENV] = str(sink)
    try:
        yield
    finally:
        flow.mlpb_events = read_events(sink)


def files_artifact(key: str) -> str:
    """The name of the artifact holding the files of task ``key`` (``step`` or ``step.index``)."""
    slug = re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")
    return f"mlpb_handoff_{slug}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"


def _native(flow, spec: RunSpec, name: str, upstream: dict, index: int | None, ship: bool) -> dict:
    """Run the task in its own directory with the files of the tasks its inputs
    name loaded from the datastore, and keep its own files as an artifact."""
    workload = load_workload(spec.workload)
    key = handoff.task_key(name, index)
    own = task_spec(spec, name, index)
    needed = handoff.keys(step_inputs(workload, workload.step(name), upstream))
    carried_root = Path(spec.artifacts).parent / "carried" / key
    try:
        carried = {need: load_files(flow, need, carried_root / need) for need in sorted(needed)}
        with shipped_events(flow) if ship else contextlib.nullcontext():
            outputs = run_step(own, name, upstream, index, workload, carried)
    finally:
        shutil.rmtree(carried_root, ignore_errors=True)
    setattr(flow, files_artifact(key), read_files(own.artifacts))
    flow.mlpb_handoff = sorted({*getattr(flow, "mlpb_handoff", []), key})
    return outputs


def load_files(flow, key: str, target: Path) -> Path:
    """Write the files of task ``key`` from its artifact under ``target``."""
    artifact = files_artifact(key)
    if key not in getattr(flow, "mlpb_handoff", []):
        raise handoff.HandoffError(f"the files of task {key!r} are not among this task's Metaflow artifacts "
                                   f"(it has those of {getattr(flow, 'mlpb_handoff', None) or 'none'})")
    target.mkdir(parents=True, exist_ok=True)
    restore_files(str(target), getattr(flow, artifact))
    vars(flow).pop(artifact, None)  # passed on by reference, not pickled and hashed again at persist
    return target


def merge_handoff(flow, inputs: list) -> None:
    """Take every branch's file artifacts into the join (by reference)."""
    keys = sorted({key for task in inputs for key in getattr(task, "mlpb_handoff", [])})
    if keys:  # with nothing to include, merge_artifacts would take every artifact
        flow.merge_artifacts(inputs, include=[files_artifact(key) for key in keys])
    flow.mlpb_handoff = keys


def read_files(root: str | os.PathLike) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in Path(root).rglob("*") if path.is_file()}


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
