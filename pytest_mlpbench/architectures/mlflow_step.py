"""``python -m pytest_mlpbench.architectures.mlflow_step``: the entry point of
the mlflow architecture's project steps in native hand-off (see
:mod:`pytest_mlpbench.architectures.mlflow_projects`).

As a step of MLflow's multistep workflow does, the step process itself moves
its files through MLflow's artifact store: first it downloads, with
``mlflow.artifacts.download_artifacts``, the artifacts each producing task
logged (the driver passes their artifact URIs), then it runs the task
(``python -m pytest_mlpbench.step``) in its own empty directory, then it logs
that directory into its own MLflow run (``MLFLOW_RUN_ID``, which
``mlflow.projects.run`` sets) under the artifact path KEY, the task's
:func:`~pytest_mlpbench.step.handoff.task_key`. Both transfers lie outside
the step's own span: they count as the architecture's overhead, as does
importing MLflow, which only a step that moves files pays.

    python -m pytest_mlpbench.architectures.mlflow_step --handoff PLAN [step arguments]

PLAN, a JSON file the driver writes per task: ``key`` (this task's KEY),
``artifacts`` (its own directory), ``carry_to`` (an empty directory for the
downloads), ``fetch`` (each producing task's KEY -> the artifact URI of its files) and
``error`` (where to write why a transfer failed, for the driver's message).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from pytest_mlpbench.step.__main__ import main as run_task


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pytest_mlpbench.architectures.mlflow_step",
                                description=__doc__.splitlines()[0])
    p.add_argument("--handoff", required=True, metavar="PLAN", help="the task's hand-off plan (JSON file)")
    args, rest = p.parse_known_args(argv)
    plan = json.loads(Path(args.handoff).read_text())
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a bar per transfer in the step's log
    try:
        carried = download(plan)
    except Exception as exc:  # reported to the driver: the step never ran
        return failed(plan, f"downloading the artifacts of {sorted(plan['fetch'])} from MLflow failed: {exc}")
    code = run_task([*rest, "--artifacts", plan["artifacts"], *(f"--carried={k}={d}" for k, d in carried.items())])
    try:
        upload(plan)
    except Exception as exc:
        return failed(plan, f"logging the task's artifacts to its MLflow run failed: {exc}")
    return code


def download(plan: dict) -> dict[str, str]:
    """Each producing task's artifacts, from its MLflow run into ``carry_to``/KEY."""
    if not plan["fetch"]:
        return {}
    from mlflow.artifacts import download_artifacts

    return {key: download_artifacts(artifact_uri=uri, dst_path=plan["carry_to"]) for key, uri in plan["fetch"].items()}


def upload(plan: dict) -> None:
    """This task's directory into its own MLflow run, under its KEY."""
    if not any(Path(plan["artifacts"]).iterdir()):
        return  # nothing written: nothing to hand on
    from mlflow import MlflowClient

    MlflowClient().log_artifacts(os.environ["MLFLOW_RUN_ID"], plan["artifacts"], artifact_path=plan["key"])


def failed(plan: dict, message: str) -> int:
    Path(plan["error"]).write_text(message)
    print(f"mlpbench: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
