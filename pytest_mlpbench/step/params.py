"""The step entry point for frameworks that hand a step's upstream outputs to
it as parameter values (KFP components).

Everything crosses as JSON strings: the run spec, the step environment, and
each upstream step's outputs (a list of them downstream of a fan-out step).
A step that feeds a fan-out also emits the fan-out's *items*: one JSON string
per task, holding the task's index and the step's outputs, so that a loop
body needs nothing but its item.

In native hand-off, a task's own directory is the path of a KFP output
artifact, marked with the task's KEY, and the files it needs arrive as input
artifacts, whose KEYs say which producing task's directory each path is.
"""
from __future__ import annotations

import json
import os
from typing import Any, Mapping, Sequence

from pytest_mlpbench.model.workload import RunSpec
from pytest_mlpbench.step import apply_environment, handoff, run_step

#: The metadata entry of a KFP artifact that names the task whose directory it is.
TASK_KEY = "mlpbench_task"


def to_param(value: Any) -> str:
    """JSON for a parameter value. kfp.local (2.17) rewrites "python3" in every
    argument of a task's command line, values included, so never write it plainly
    (a JSON escape reads back the same)."""
    return json.dumps(value).replace("python3", "\\u0070ython3")


def run_pipeline_task(spec_json: str, env_json: str, step_name: str, upstream: Mapping[str, Any],
                      index: int | None = None, fanout_key: str | None = None, artifacts=None,
                      inputs: Sequence = ()):
    """Run one task; return its outputs as JSON, and with ``fanout_key`` also
    the items of the fan-out over the list under that key. Native hand-off:
    ``artifacts`` is the task's output artifact, ``inputs`` the needed steps'
    (a list of them for a fan-out step)."""
    apply_environment(json.loads(env_json))
    spec = RunSpec.from_json(spec_json)
    produced = {name: [json.loads(v) for v in value] if isinstance(value, list) else json.loads(value)
                for name, value in upstream.items()}
    carried = None
    if artifacts is not None:
        os.makedirs(artifacts.path, exist_ok=True)
        artifacts.metadata[TASK_KEY] = handoff.task_key(step_name, index)
        spec.artifacts = artifacts.path
        carried = {a.metadata[TASK_KEY]: a.path for given in inputs
                   for a in (given if isinstance(given, list) else [given]) if TASK_KEY in a.metadata}
    outputs = run_step(spec, step_name, produced, index, carried=carried)
    if fanout_key is None:
        return to_param(outputs)
    return to_param(outputs), fanout_items(step_name, outputs, fanout_key)


def fanout_items(step_name: str, outputs: dict, key: str) -> list[str]:
    shards = outputs.get(key)
    if not isinstance(shards, list):
        raise ValueError(f"step {step_name!r} feeds a fan-out over {key!r}, but returned "
                         f"{type(shards).__name__} there, not a list")
    text = to_param(outputs)
    return [to_param({"index": i, "outputs": text}) for i in range(len(shards))]


def run_fanout_task(spec_json: str, env_json: str, step_name: str, need: str, item: str, **native):
    """Run the task of a fan-out step that ``item`` names."""
    item_value = json.loads(item)
    return run_pipeline_task(spec_json, env_json, step_name, {need: item_value["outputs"]}, item_value["index"],
                             **native)
