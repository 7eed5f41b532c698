"""``subprocess``: each task in a fresh Python process; the floor for
architectures that isolate steps in processes. Fan-out tasks run concurrently."""
from __future__ import annotations

import json
import signal
import sys

from pytest_mlpbench.architectures.base import Architecture, RunFailed, kill_group
from pytest_mlpbench.model.workload import fanout_items, step_inputs
from pytest_mlpbench.step.events import read_events


def exit_reason(code: int | None) -> str:
    """How a process ended, from its exit status as Popen (negative: the
    signal) or a shell and a container engine (128 + the signal) report it."""
    if code is None:
        return "did not say how it ended"
    if code < 0:
        return f"was killed by {_signal_name(-code)}"
    if 128 < code < 128 + 65 and _signal_name(code - 128, None):
        return f"exited {code} (128 + {_signal_name(code - 128)}: killed by {_signal_name(code - 128)})"
    return f"exited {code}"


def step_error(run, step: str, index: int | None = None) -> str | None:
    """The error a task's own step event reports, when it got that far."""
    errors = [e.get("error") for e in read_events(run.spec.events, run.spec.run_id)
              if e.get("step") == step and e.get("index") == index and e.get("outcome") == "failed"]
    return errors[-1] if errors and errors[-1] else None


def task_failure(run, step: str, index: int | None, code: int | None, what: str = "its process") -> str:
    """``step 'NAME[i]': ERROR (its process exited 1)``, the error from the
    step's own event; where the step had no say (a signal), ``step 'NAME':
    its process was killed by SIGKILL``."""
    task = step + ("" if index is None else f"[{index}]")
    error = step_error(run, step, index)
    ended = "" if code is None else f"{what} {exit_reason(code)}"
    if error:
        return f"step {task!r}: {error}" + (f" ({ended})" if ended else "")
    return f"step {task!r}: {ended or 'failed'}"


def _signal_name(number: int, default: str | None = "") -> str | None:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}" if default is not None else None


class Subprocesses(Architecture):
    name = "subprocess"

    def run(self, workload, run):
        spec_file = run.dir / "spec.json"
        spec_file.write_text(run.spec.to_json())
        outputs: dict = {}
        files: dict[str, list] = {}  # each step's outputs files, in task order
        for step in workload.steps:
            inputs = step_inputs(workload, step, outputs)
            indices = range(len(fanout_items(step, inputs))) if step.foreach else [None]
            upstream = [f"--upstream={need}={path}" for need in step.needs for path in files[need]]
            procs = []
            try:
                for index in indices:
                    suffix = "" if index is None else f".{index}"
                    out = run.dir / f"{step.name}{suffix}.outputs.json"
                    cmd = [sys.executable, "-m", "pytest_mlpbench.step", "--spec", str(spec_file),
                           "--step", step.name, *upstream, "--outputs", str(out)]
                    if index is not None:
                        cmd += ["--index", str(index)]
                    procs.append((run.start(cmd, log_name=f"{step.name}{suffix}"), out, index))
                for proc, _, index in procs:
                    try:
                        run.wait(proc)
                    except RunFailed as exc:
                        if type(exc) is not RunFailed:  # a timeout says so itself
                            raise
                        raise RunFailed(f"{task_failure(run, step.name, index, proc.returncode)}; {exc}") from None
            finally:
                for proc, _, _ in procs:
                    kill_group(proc)
            files[step.name] = [out for _, out, _ in procs]
            results = [json.loads(out.read_text()) for out in files[step.name]]
            outputs[step.name] = results if step.foreach else results[0]
