"""The entry point of airflow-kubernetes' pods: one task of a step.

    python -m pytest_mlpbench.architectures.airflow.podtask --step NAME [--index I]

``MLPBENCH_CONF`` holds the DAG run's ``mlpbench`` conf (the run spec) and
``MLPBENCH_UPSTREAM`` the upstream pods' results. Artifacts live on the
volume mounted at ``/mlpbench``; the step's event travels back with its
outputs in ``/airflow/xcom/return.json`` (the KubernetesPodOperator's XCom).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ...events import EVENTS_ENV, read_events
from ...task import run_task, write_json_atomic
from ...workload import RunSpec, load_workload, step_inputs

VOLUME = Path("/mlpbench")
XCOM = Path("/airflow/xcom/return.json")


def pod_spec(conf: dict, volume: Path = VOLUME) -> RunSpec:
    spec = RunSpec(**conf["spec"])
    spec.artifacts = str(volume / spec.run_id / "artifacts")
    spec.events = str(Path("/tmp") / f"{spec.run_id}.events.jsonl")
    return spec


def upstream_outputs(upstream: dict) -> dict:
    """Pod results (``{"outputs": ..., "events": ...}``) to step outputs."""
    return {name: [r["outputs"] for r in result] if isinstance(result, list) else result["outputs"]
            for name, result in upstream.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pytest_mlpbench.architectures.airflow.podtask")
    parser.add_argument("--step", required=True)
    parser.add_argument("--index", type=int)
    args = parser.parse_args(argv)
    conf = json.loads(os.environ["MLPBENCH_CONF"])
    spec = pod_spec(conf)
    Path(spec.artifacts).mkdir(parents=True, exist_ok=True)
    os.environ[EVENTS_ENV] = spec.events
    if conf.get("env", {}).get("TRACEPARENT"):
        os.environ["TRACEPARENT"] = conf["env"]["TRACEPARENT"]
    workload = load_workload(spec.workload)
    upstream = upstream_outputs(json.loads(os.environ.get("MLPBENCH_UPSTREAM") or "{}"))
    inputs = step_inputs(workload, workload.step(args.step), upstream)
    try:
        outputs = run_task(spec, args.step, inputs, args.index)
    finally:
        for event in read_events(spec.events, spec.run_id):
            print("mlpbench event:", json.dumps(event), flush=True)  # kept in the pod log if the step fails
    XCOM.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(XCOM, {"outputs": outputs, "events": read_events(spec.events, spec.run_id)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
