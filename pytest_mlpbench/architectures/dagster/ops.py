"""What the generated Dagster code runs: one op per workload step, each a
wrapper around :func:`pytest_mlpbench.step.run_step`, so the step records its
own step event in the op's process (the multiprocess executor gives every op
a process of its own).

The servers live for the session but every run has its own spec, event sink,
trace context and import path: they reach the ops through the run config of
the ``mlpbench`` resource and are set in the op's process before the step
runs. A step that feeds a fan-out also yields one ``DynamicOutput`` per task
(its value is the task index); the fan-out step's ops run over them with
``.map`` and the step after it takes their results with ``.collect()``.

Imported by the code server, the run worker and every op process (Dagster
loads the code location in each), never by the test process.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from dagster import (ConfigurableResource, DynamicOut, DynamicOutput, In, Out, Output, multiprocess_executor, op,
                     repository)

from pytest_mlpbench.model.workload import RunSpec, Workload, WorkloadError
from pytest_mlpbench.step import apply_environment, run_step

RESOURCE = "mlpbench"
RESULT = "result"  # the op output that carries the step's outputs downstream
ITEMS = "items"  # the dynamic output a fan-out maps over
INDEX = "index"  # the fan-out op input that receives its task index
JOB_PREFIX = "mlpbench_"


class MlpbenchRun(ConfigurableResource):
    """The run's spec and step environment, as JSON: ``{"spec": {...}, "env": {...}}``."""

    payload: str

    def apply(self) -> RunSpec:
        try:
            payload = json.loads(self.payload)
            spec = RunSpec(**payload["spec"])
        except (ValueError, KeyError, TypeError):
            raise WorkloadError(f"the run config of resource {RESOURCE!r} holds no run spec: launch the job "
                                "through pytest-mlpbench") from None
        apply_environment(payload.get("env", {}))
        return spec


#: What every generated job is defined with: the multiprocess executor (an op per process) and the run's resource.
JOB_OPTIONS = {"executor_def": multiprocess_executor,
               "resource_defs": {RESOURCE: MlpbenchRun.configure_at_launch()},
               "tags": {"mlpbench": "true"}}


def step_op(workload: Workload, step_name: str, fans_out: str | None = None):
    """The op of ``step_name``: its upstream steps' results as inputs (a fan-out
    step's ops also take their task index); with ``fans_out``, the key of its
    outputs whose list a downstream fan-out maps over, one dynamic output per element.

    The step's function is resolved here, when the op process loads the job and
    before Dagster's STEP_START, as a Dagster project imports its ops' code: the
    step event and Dagster's step events then time the same work."""
    step = workload.step(step_name)
    step.resolve()
    ins = {need: In() for need in step.needs}
    if step.foreach:
        ins[INDEX] = In(int)
    outs = {RESULT: Out()}
    if fans_out:
        outs[ITEMS] = DynamicOut(int)

    @op(name=step_name, ins=ins, out=outs, required_resource_keys={RESOURCE})
    def run_task(context, **inputs):
        spec = context.resources.mlpbench.apply()
        index = inputs.pop(INDEX, None)
        upstream = {name: _outputs(value) for name, value in inputs.items()}
        outputs = run_step(spec, step_name, upstream, index, workload)
        yield Output(outputs if index is None else [index, outputs], RESULT)
        if fans_out:
            items = outputs.get(fans_out)
            if not isinstance(items, list):
                raise WorkloadError(f"step {step_name!r}: output {fans_out!r} feeds a fan-out but is a "
                                    f"{type(items).__name__}, not a list")
            for i in range(len(items)):
                yield DynamicOutput(i, mapping_key=str(i), output_name=ITEMS)

    return run_task


def _outputs(value):
    """An upstream result: a step's outputs, or a fan-out step's ``[index, outputs]`` pairs in task order."""
    if isinstance(value, dict):
        return value
    return [outputs for _, outputs in sorted(value, key=lambda pair: pair[0])]


def lazy_repositories(folder: str | Path) -> dict:
    """The code location: a repository for the job of each generated ``mlpbench_*.py``
    file of ``folder``, named as the job (op names are unique per repository, and every
    workload has its own ``begin``...). Each job is built only when asked for, so that
    a run's worker and op processes import only their own workload. The location needs
    a repository before the first workload comes: ``mlpbench``, which has no jobs."""
    found = {path.stem: _repository(path) for path in sorted(Path(folder).glob(f"{JOB_PREFIX}*.py"))}
    return {"mlpbench": repository(name="mlpbench")(lambda: []), **found}


def _repository(path: Path):
    @repository(name=path.stem)
    def lazy():
        return {"jobs": {path.stem: lambda: _load_job(path)}}

    return lazy


def _load_job(path: Path):
    spec = importlib.util.spec_from_file_location(f"mlpbench_dagster_jobs.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, path.stem)
