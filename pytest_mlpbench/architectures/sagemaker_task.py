"""One task of a SageMaker pipeline step, inside its processing container:

    python3 -m pytest_mlpbench.architectures.sagemaker_task --step NAME --spec JSON --env JSON
        [--index I] [--fanout-key KEY]

Upstream outputs come from ``/opt/ml/processing/input/steps/<need>/`` and the
outputs, events and fan-out items go to ``/opt/ml/processing/output/`` (see
:mod:`sagemaker_pipeline` for the layout).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .pipeline_task import run_pipeline_task

PROCESSING = Path(os.environ.get("MLPBENCH_SAGEMAKER_ROOT", "/opt/ml/processing"))


def read_upstream(workload, step_name: str) -> dict:
    """Each need's outputs JSON; a fan-out need's as a list in task order."""
    upstream = {}
    for need in workload.step(step_name).needs:
        folder = PROCESSING / "input" / "steps" / need
        if workload.step(need).foreach:
            tasks = sorted((p for p in folder.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
            upstream[need] = [(p / "outputs.json").read_text() for p in tasks]
        else:
            upstream[need] = (folder / "outputs.json").read_text()
    return upstream


def main(argv: list[str] | None = None) -> int:
    from ..workload import RunSpec, load_workload

    parser = argparse.ArgumentParser(prog="python -m " + __spec__.name if __spec__ else None)
    parser.add_argument("--step", required=True)
    parser.add_argument("--spec", required=True)
    parser.add_argument("--env", required=True)
    parser.add_argument("--index", type=int)
    parser.add_argument("--fanout-key")
    args = parser.parse_args(argv)
    out = PROCESSING / "output" / ("" if args.index is None else str(args.index))
    out.mkdir(parents=True, exist_ok=True)
    spec = json.loads(args.spec)
    env = {**json.loads(args.env), "MLPBENCH_EVENTS": str(out / "events.jsonl")}
    spec.update(artifacts=str(PROCESSING / "artifacts" / args.step), events=env["MLPBENCH_EVENTS"])
    Path(spec["artifacts"]).mkdir(parents=True, exist_ok=True)
    sys.path[:0] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    workload = load_workload(RunSpec(**spec).workload)
    result = run_pipeline_task(json.dumps(spec), json.dumps(env), args.step, read_upstream(workload, args.step),
                               args.index, args.fanout_key)
    outputs, items = result if args.fanout_key else (result, None)
    (out / "outputs.json").write_text(outputs)
    if items is not None:
        (out / "fanout.json").write_text(json.dumps({"items": json.dumps(list(range(len(items))))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
