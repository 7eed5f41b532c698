"""``subprocess``: each task in a fresh Python process; the floor for
architectures that isolate steps in processes. Fan-out tasks run concurrently."""
from __future__ import annotations

import json
import sys

from ..task import write_json_atomic
from ..workload import fanout_items, step_inputs
from .base import Architecture, kill_group


class Subprocesses(Architecture):
    name = "subprocess"

    def run(self, workload, run):
        spec_file = run.dir / "spec.json"
        spec_file.write_text(run.spec.to_json())
        outputs: dict = {}
        for step in workload.steps:
            inputs = step_inputs(workload, step, outputs)
            inputs_file = run.dir / f"{step.name}.inputs.json"
            write_json_atomic(inputs_file, inputs)
            indices = range(len(fanout_items(step, inputs))) if step.foreach else [None]
            procs = []
            try:
                for index in indices:
                    suffix = "" if index is None else f".{index}"
                    out = run.dir / f"{step.name}{suffix}.outputs.json"
                    cmd = [sys.executable, "-m", "pytest_mlpbench.task", "--spec", str(spec_file),
                           "--step", step.name, "--inputs", str(inputs_file), "--outputs", str(out)]
                    if index is not None:
                        cmd += ["--index", str(index)]
                    procs.append((run.start(cmd, log_name=f"{step.name}{suffix}"), out))
                for proc, _ in procs:
                    run.wait(proc)
            finally:
                for proc, _ in procs:
                    kill_group(proc)
            results = [json.loads(out.read_text()) for _, out in procs]
            outputs[step.name] = results if step.foreach else results[0]
