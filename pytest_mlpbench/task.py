"""Run one task of a workload step in this process: the entry point that
process-based architectures call.

    python -m pytest_mlpbench.task --spec SPEC.json --step NAME [--index I]
        --inputs INPUTS.json --outputs OUTPUTS.json

``--inputs`` holds the step's merged inputs (see ``workload.step_inputs``);
the task narrows them to its item when ``--index`` is given.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .events import execute_step
from .workload import RunSpec, load_workload, task_inputs


def run_task(spec: RunSpec, step_name: str, inputs: dict, index: int | None) -> dict:
    step = load_workload(spec.workload).step(step_name)
    if index is not None:
        inputs = task_inputs(step, inputs, index)
    return execute_step(spec, step_name, inputs, index=index)


def write_json_atomic(path: str | os.PathLike, value) -> None:
    tmp = Path(f"{path}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_mlpbench.task")
    parser.add_argument("--spec", required=True, help="run spec JSON file")
    parser.add_argument("--step", required=True)
    parser.add_argument("--index", type=int)
    parser.add_argument("--inputs", required=True, help="merged inputs JSON file")
    parser.add_argument("--outputs", required=True, help="where to write the outputs JSON")
    args = parser.parse_args(argv)
    spec = RunSpec.from_json(Path(args.spec).read_text())
    inputs = json.loads(Path(args.inputs).read_text())
    outputs = run_task(spec, args.step, inputs, args.index)
    write_json_atomic(args.outputs, outputs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
