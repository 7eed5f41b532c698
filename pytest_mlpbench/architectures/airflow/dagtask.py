"""What runs inside an Airflow task: one step of a workload, run through
:func:`pytest_mlpbench.step.run_step` so it records its own step event.

Servers live for the session but each run has its own event sink, trace
context and import path, so those travel in the DAG run's conf (key
``mlpbench``) and are set in the task process, a fresh fork per task, before
the step runs. Outputs travel as the XCom ``outputs``; the return value is
the list a downstream fan-out step maps over. In native hand-off the files
travel through Airflow's Object Storage (see :mod:`.storage`).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

from pytest_mlpbench.model.workload import RunSpec, WorkloadError, load_workload
from pytest_mlpbench.step import apply_environment, run_step

CONF_KEY = "mlpbench"
OUTPUTS_KEY = "outputs"


def apply_conf(conf: Mapping) -> RunSpec:
    """Set the run's environment in this task process and return its spec."""
    try:
        payload = conf[CONF_KEY]
    except (KeyError, TypeError):
        raise WorkloadError(f"the DAG run has no {CONF_KEY!r} conf: trigger it through pytest-mlpbench") from None
    apply_environment(payload.get("env", {}))
    return RunSpec(**payload["spec"])


def as_outputs(value):
    """An upstream's XCom: its outputs dict, or a fan-out step's list of them."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [dict(v) for v in value]
    raise WorkloadError(f"unexpected upstream outputs: {type(value).__name__}")


def run_dag_task(step_name: str, upstream: Mapping, feeds: str | None, context: Mapping):
    """Run ``step_name`` with its upstream outputs; push its outputs; return
    the list under ``feeds`` (the key a downstream fan-out maps over), if any."""
    conf = context["dag_run"].conf
    spec = apply_conf(conf)
    workload = load_workload(spec.workload)
    ti = context["ti"]
    index = ti.map_index if workload.step(step_name).foreach else None
    upstream = {name: as_outputs(v) for name, v in upstream.items()}
    if spec.handoff == "native":
        from pytest_mlpbench.architectures.airflow.storage import run_native

        outputs = run_native(spec, step_name, upstream, index, workload, conf[CONF_KEY])
    else:
        outputs = run_step(spec, step_name, upstream, index, workload)
    ti.xcom_push(key=OUTPUTS_KEY, value=outputs)
    if feeds is None:
        return None
    items = outputs.get(feeds, [])
    if not isinstance(items, list):
        raise WorkloadError(f"step {step_name!r}: output {feeds!r} feeds a fan-out but is a "
                            f"{type(items).__name__}, not a list")
    return items
