"""``inprocess``: the steps called in order in the test process; the floor."""
from __future__ import annotations

from ..events import execute_step
from ..workload import fanout_items, step_inputs, task_inputs
from .base import Architecture, RunFailed, RunTimeout


class InProcess(Architecture):
    name = "inprocess"

    def run(self, workload, run):
        outputs: dict = {}
        for step in workload.steps:
            inputs = step_inputs(workload, step, outputs)
            try:
                if step.foreach:
                    outputs[step.name] = [
                        execute_step(run.spec, step.name, task_inputs(step, inputs, i), index=i)
                        for i in range(len(fanout_items(step, inputs)))
                    ]
                else:
                    outputs[step.name] = execute_step(run.spec, step.name, inputs)
            except Exception as exc:
                raise RunFailed(f"step {step.name!r} failed: {exc!r}") from exc
            if run.remaining_s() == 0:
                raise RunTimeout(f"run exceeded --mlpbench-timeout={run.timeout_s:g}s after step {step.name!r}")
