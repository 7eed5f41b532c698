"""``inprocess``: the steps called in order in the test process; the floor."""
from __future__ import annotations

import signal
import threading

from pytest_mlpbench.architectures.base import Architecture, RunFailed, RunTimeout
from pytest_mlpbench.model.workload import fanout_items, step_inputs
from pytest_mlpbench.step import run_step


class InProcess(Architecture):
    name = "inprocess"

    def run(self, workload, run):
        outputs: dict = {}
        with _deadline(run):
            for step in workload.steps:
                try:
                    if step.foreach:
                        width = len(fanout_items(step, step_inputs(workload, step, outputs)))
                        outputs[step.name] = [run_step(run.spec, step.name, outputs, i, workload) for i in range(width)]
                    else:
                        outputs[step.name] = run_step(run.spec, step.name, outputs, workload=workload)
                except RunTimeout:
                    raise
                except Exception as exc:
                    raise RunFailed(f"step {step.name!r} failed: {exc!r}") from exc


class _deadline:
    """Interrupt a step that outlives the run's time limit: there is no other
    process to kill. Only the main thread can take the signal; elsewhere the
    limit is not enforced."""

    def __init__(self, run):
        self.run = run
        self.armed = run.timeout_s is not None and threading.current_thread() is threading.main_thread()

    def __enter__(self):
        if self.armed:
            self.old = signal.signal(signal.SIGALRM, self._expired)
            signal.setitimer(signal.ITIMER_REAL, max(self.run.remaining_s(), 1e-3))

    def __exit__(self, *exc):
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)

    def _expired(self, signum, frame):
        raise RunTimeout(f"run exceeded --mlpbench-timeout={self.run.timeout_s:g}s; its step was interrupted")
