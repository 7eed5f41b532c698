"""The shape of a workload's DAG as frameworks need it: which step feeds a fan-out, over which key."""
from __future__ import annotations

from pytest_mlpbench.model.workload import Workload, WorkloadError


def fanout_feeds(workload: Workload, who: str, single_need: bool = False) -> dict[str, str]:
    """For each step that feeds a fan-out step, the key of its outputs that the
    fan-out maps over. ``who`` (the architecture) maps one level deep, one key
    per feeding step, and with ``single_need`` only fan-out steps that need
    exactly one step (a loop body that gets nothing but its item)."""
    feeds: dict[str, str] = {}
    for step in workload.steps:
        if not step.foreach:
            continue
        if single_need and len(step.needs) != 1:
            raise WorkloadError(f"{who}: fan-out step {step.name!r} needs {len(step.needs)} steps; its loop body "
                                "gets only its item, so a fan-out step must need exactly one")
        for need in step.needs:
            if workload.step(need).foreach:
                raise WorkloadError(f"{who}: fan-out step {step.name!r} follows fan-out step {need!r}; "
                                    "fan-outs map one level deep here")
            if feeds.get(need, step.foreach) != step.foreach:
                raise WorkloadError(f"{who}: step {need!r} feeds fan-outs over different keys "
                                    f"{sorted({feeds[need], step.foreach})}")
            feeds[need] = step.foreach
    return feeds
