"""Read a finished Metaflow run back through Metaflow's Client API: per-task
creation and finish times, and the events and files remote tasks shipped as artifacts."""
from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pytest_mlpbench.architectures.metaflow.body import files_artifact, restore_files
from pytest_mlpbench.architectures.metaflow.flowgen import Node
from pytest_mlpbench.step.events import append_event


def collect(run, flow_name: str, run_id: str, metadata_root: Path, nodes: list[Node], shipped: bool) -> None:
    """Put every task's Metaflow times into ``run.task_info``; with ``shipped``,
    also append the tasks' step events to the run's sink and restore the
    artifact files the last task holds."""
    from metaflow import Run, metadata, namespace

    metadata(f"local@{metadata_root}")
    namespace(None)
    by_name = {node.name: node for node in nodes}
    flow_run = Run(f"{flow_name}/{run_id}")
    last_task = None
    for mf_step in flow_run:
        node = by_name.get(mf_step.id)
        for task in mf_step:
            last_task = task if node is nodes[-1] else last_task
            if shipped and "mlpb_events" in task:
                for event in task["mlpb_events"].data:
                    append_event(run.spec.events, event)
            if node is None or node.step is None:
                continue
            info = {"created_ns": _ns(task.created_at), "metaflow_task": task.pathspec}
            if task.finished_at is not None:
                info["finished_ns"] = _ns(task.finished_at)
            run.add_task_info(node.step, task.index if node.foreach else None, **info)
    if shipped and last_task is not None and "mlpb_files" in last_task:
        restore_files(run.spec.artifacts, last_task["mlpb_files"].data)
    if shipped and last_task is not None and "mlpb_handoff" in last_task:  # native: each task's own files
        for key in last_task["mlpb_handoff"].data:
            restore_files(str(Path(run.spec.artifacts) / key), last_task[files_artifact(key)].data)


def _ns(when: datetime) -> int:
    """Metaflow keeps epoch milliseconds and hands out naive local datetimes."""
    return round(when.timestamp() * 1000) * 1_000_000
