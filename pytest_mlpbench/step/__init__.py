"""The one step entry point: run one task of a workload step in this process.

Every architecture runs its steps through :func:`run_step`: in the test
process (``inprocess``), inside a framework's own task (Airflow, Metaflow,
KFP components), or as ``python -m pytest_mlpbench.step`` (subprocess, DVC,
MLflow, SageMaker containers, Airflow pods). Light to import: neither pytest
nor any framework SDK.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from pytest_mlpbench.model.workload import RunSpec, Workload, load_workload, step_inputs, task_inputs
from pytest_mlpbench.step import handoff
from pytest_mlpbench.step.events import execute_step

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing typing costs every task's process 3 ms
    from typing import Any


def run_step(spec: RunSpec, step_name: str, upstream: Mapping[str, Any], index: int | None = None,
             workload: Workload | None = None, carried: Mapping[str, str | os.PathLike] | None = None) -> dict:
    """Run task ``index`` of step ``step_name`` (None: its only task) and return its outputs.

    ``upstream`` maps each step it needs to that step's outputs (a list in
    task order for a fan-out step); other keys are ignored. The task records
    its own step event (see :func:`~pytest_mlpbench.step.events.execute_step`).
    With ``spec.handoff == "native"``, ``spec.artifacts`` is this task's own
    directory and ``carried`` maps each producing task (:func:`.handoff.keys`
    of ``upstream``) to the directory its files were carried to.
    """
    workload = workload or load_workload(spec.workload)
    step = workload.step(step_name)
    inputs = step_inputs(workload, step, upstream)
    native = spec.handoff == "native"
    if native:
        inputs = handoff.localize(inputs, carried or {})
    if index is not None:
        inputs = task_inputs(step, inputs, index)
    outputs = execute_step(spec, step_name, inputs, index=index)
    return handoff.portable(outputs, spec.artifacts, handoff.task_key(step_name, index)) if native else outputs


def task_spec(spec: RunSpec, step_name: str, index: int | None) -> RunSpec:
    """The spec a task runs with: in native hand-off, its own directory under the run's artifacts."""
    if spec.handoff != "native":
        return spec
    own = Path(spec.artifacts) / handoff.task_key(step_name, index)
    own.mkdir(parents=True, exist_ok=True)
    return RunSpec(**{**spec.__dict__, "artifacts": str(own)})


def read_outputs(paths: Sequence[str | os.PathLike], fanout) -> dict | list[dict]:
    """A step's outputs from its files: one file, or a fan-out step's files in
    task order. A directory stands for its ``outputs.json``, or for a fan-out
    step, for the ``outputs.json`` of each of its numbered folders."""
    paths = [Path(p) for p in paths]
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        tasks = sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
        paths = [p / "outputs.json" for p in tasks] if fanout else [folder / "outputs.json"]
    outputs = [json.loads(p.read_text()) for p in paths]
    return outputs if fanout else outputs[0]


def apply_environment(env: Mapping[str, str]) -> None:
    """Set a step environment (see ``Run.env``) in this already started process:
    its variables, and its import path (PYTHONPATH is read only at interpreter start)."""
    os.environ.update(env)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
    sys.path[:0] = paths


def write_json_atomic(path: str | os.PathLike, value) -> None:
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)
