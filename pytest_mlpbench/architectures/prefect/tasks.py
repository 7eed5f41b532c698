"""What the generated Prefect flow calls in Prefect's own processes: the task
runner's pool processes import the workload once, then run one step task at a
time in-process, recording its step event there. Imports nothing of Prefect
(it runs on Prefect's Python, with the test environment's packages behind
Prefect's own on the import path; docs/prefect.md)."""
from __future__ import annotations

import sys

from pytest_mlpbench.model.workload import RunSpec, load_workload
from pytest_mlpbench.step import apply_environment, run_step


def import_steps(ref: str, import_path: list[str]) -> None:
    """The task runner's initializer: a pool process imports the workload's step code
    (torch, for training) before its first task is Running, as a Prefect project's
    task module imports its own code."""
    sys.path[:0] = [p for p in import_path if p not in sys.path]
    for step in load_workload(ref).steps:
        step.resolve()


def run_task(run: dict, step: str, upstream: dict, index: int | None = None) -> dict:
    """One task of ``step`` with the run's spec and step environment; its outputs."""
    apply_environment(run["env"])
    return run_step(RunSpec.from_json(run["spec"]), step, upstream, index)
