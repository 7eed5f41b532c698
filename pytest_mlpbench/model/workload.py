"""The workload model: a small DAG of steps that any architecture can run.

A step is a function ``fn(ctx, **inputs) -> dict``. Its inputs are the merged
outputs of the steps it needs; outputs are small JSON values or paths of files
under ``ctx.artifacts``, never live objects, so they can cross processes.

Fan-out: a step with ``foreach="shards"`` runs once per element of the list
its inputs hold under ``shards``; each task gets that element as ``item`` (and
its position as ``ctx.index``). A step that needs a fan-out step receives each
of that step's output keys as a list, one value per task, in task order.
"""
from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from pytest_mlpbench.model.value import Frozen, Value

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing typing costs every task's process 3 ms
    from typing import Any

SCALES = ("smoke", "small", "full")


class WorkloadError(Exception):
    """A workload definition or a step's inputs are wrong."""


class Step(Frozen):
    """``fn`` is the function or its ``"module:function"`` path; a path keeps
    the workload light to import and lets the step's own imports (torch...)
    happen before the step's clock starts, as a fresh process must."""

    def __init__(self, name: str, fn: Callable[..., dict] | str, needs: tuple[str, ...] = (),
                 foreach: str | None = None):
        self.name = name
        self.fn = fn
        self.needs = needs
        self.foreach = foreach

    def resolve(self) -> Callable[..., dict]:
        if callable(self.fn):
            return self.fn
        module_name, _, attr = self.fn.partition(":")
        try:
            return getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise WorkloadError(f"step {self.name!r}: cannot import {self.fn!r}: {exc}") from exc


class Workload(Frozen):
    """A named DAG of steps with per-scale parameters.

    ``ref`` is the import path (``"package.module:ATTRIBUTE"``) by which a
    step process finds this workload again; ``marker`` is the pytest marker
    that selects its benchmarks (``training`` or ``inference``). ``options``
    are its :class:`pytest_mlpbench.options.Option`, each with a ``param``:
    set, it overrides that parameter of every scale. ``handoff`` is how its
    steps' files reach the next steps: ``shared`` (one directory) or
    ``native`` (each framework's own data layer; see ``pytest_mlpbench.step.handoff``).
    """

    def __init__(self, name: str, ref: str, steps: tuple[Step, ...], scales: Mapping[str, Mapping[str, Any]],
                 marker: str = "training", builtin: bool = False, options: tuple = (), handoff: str = "shared"):
        self.name = name
        self.ref = ref
        self.steps = steps
        self.scales = scales
        self.marker = marker
        self.builtin = builtin
        self.options = options
        self.handoff = handoff
        self._check()

    def _check(self) -> None:
        names = [s.name for s in self.steps]
        if len(set(names)) != len(names):
            raise WorkloadError(f"workload {self.name!r}: duplicate step names in {names}")
        seen: set[str] = set()
        for step in self.steps:
            unknown = [n for n in step.needs if n not in seen]
            if unknown:
                raise WorkloadError(
                    f"workload {self.name!r}: step {step.name!r} needs {unknown}, "
                    "which must be declared before it"
                )
            if step.foreach and not step.needs:
                raise WorkloadError(f"workload {self.name!r}: fan-out step {step.name!r} needs an upstream step")
            seen.add(step.name)
        for opt in self.options:
            if not getattr(opt, "param", None):
                raise WorkloadError(f"workload {self.name!r}: option {opt.name!r} names no param to set")
        if self.handoff not in ("shared", "native"):
            raise WorkloadError(f"workload {self.name!r}: handoff must be 'shared' or 'native', not {self.handoff!r}")
        missing = [s for s in SCALES if s not in self.scales]
        if missing:
            raise WorkloadError(f"workload {self.name!r}: no parameters for scales {missing}")

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise WorkloadError(f"workload {self.name!r} has no step {name!r}")

    def edges(self) -> list[tuple[str, str]]:
        return [(need, step.name) for step in self.steps for need in step.needs]

    def downstream(self, name: str) -> list[str]:
        return [s.name for s in self.steps if name in s.needs]


class RunSpec(Value):
    """Everything a step needs to know about its run; travels as JSON. ``workload`` is the
    Workload's import ref; ``handoff`` how files reach the next task (see pytest_mlpbench.step.handoff)."""

    def __init__(self, workload: str, scale: str, run_id: str, artifacts: str, events: str,
                 params: dict | None = None, traceparent: str | None = None, handoff: str = "shared"):
        self.workload = workload
        self.scale = scale
        self.run_id = run_id
        self.artifacts = artifacts
        self.events = events
        self.params = {} if params is None else params
        self.traceparent = traceparent
        self.handoff = handoff

    def to_json(self) -> str:
        return json.dumps(self.__dict__, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunSpec":
        return cls(**json.loads(text))


class StepContext(Value):
    """What a step function sees besides its inputs."""

    def __init__(self, spec: RunSpec, step: str, index: int | None, metrics: dict | None = None):
        self.spec = spec
        self.step = step
        self.index = index
        self.metrics = {} if metrics is None else metrics

    @property
    def artifacts(self) -> Path:
        return Path(self.spec.artifacts)

    @property
    def scale(self) -> str:
        return self.spec.scale

    @property
    def params(self) -> dict:
        """The scale's parameters, overridden by the run's own."""
        return {**load_workload(self.spec.workload).scales[self.spec.scale], **self.spec.params}

    def metric(self, name: str, value: float) -> None:
        """Record a figure of the workload itself (accuracy, BLEU...) in the run record."""
        self.metrics[name] = float(value)


def load_workload(ref: str) -> Workload:
    """Import a workload by its ``module:attribute`` reference."""
    module_name, _, attr = ref.partition(":")
    try:
        workload = getattr(importlib.import_module(module_name), attr or "WORKLOAD")
    except (ImportError, AttributeError) as exc:
        raise WorkloadError(f"cannot import workload {ref!r}: {exc}") from exc
    if not isinstance(workload, Workload):
        raise WorkloadError(f"{ref!r} is a {type(workload).__name__}, not a Workload")
    return workload


def step_inputs(workload: Workload, step: Step, outputs: Mapping[str, Any]) -> dict:
    """Merge the outputs of ``step``'s upstream steps into its keyword inputs.

    ``outputs`` maps a step name to its output dict, or to the list of its
    tasks' output dicts for a fan-out step.
    """
    inputs: dict = {}
    for need in step.needs:
        produced = outputs[need]
        if isinstance(produced, list):
            keys = produced[0].keys() if produced else ()
            produced = {key: [task[key] for task in produced] for key in keys}
        clash = inputs.keys() & produced.keys()
        if clash:
            raise WorkloadError(f"step {step.name!r}: inputs {sorted(clash)} come from more than one upstream step")
        inputs.update(produced)
    return inputs


def fanout_items(step: Step, inputs: Mapping[str, Any]) -> list:
    """The elements a fan-out step runs over."""
    items = inputs.get(step.foreach)
    if not isinstance(items, list):
        raise WorkloadError(
            f"fan-out step {step.name!r} expects a list under input {step.foreach!r}, got {type(items).__name__}"
        )
    return items


def task_inputs(step: Step, inputs: Mapping[str, Any], index: int) -> dict:
    """The inputs of task ``index`` of a fan-out step."""
    rest = {k: v for k, v in inputs.items() if k != step.foreach}
    return {**rest, "item": fanout_items(step, inputs)[index]}


def directory_bytes(path: str | os.PathLike) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total
