"""Small workloads and architectures with known behaviour, for the plugin's tests.

Importable by step processes too: architectures pass the test process's
``sys.path`` on, so ``fakes`` resolves in any child.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pytest_mlpbench import Architecture, Step, Workload
from pytest_mlpbench.architectures.inprocess import InProcess
from pytest_mlpbench.model.workload import directory_bytes, fanout_items, step_inputs
from pytest_mlpbench.step import handoff, run_step, task_spec
from pytest_mlpbench.step.events import execute_step

SCALES = {"smoke": {"sleep_s": 0.05}, "small": {"sleep_s": 0.1}, "full": {"sleep_s": 0.2}}


def begin(ctx) -> dict:
    time.sleep(ctx.params["sleep_s"])
    path = ctx.artifacts / "begin.json"
    path.write_text(json.dumps({"value": 1}))
    return {"begun": str(path), "shards": [1, 2, 3]}


def middle(ctx, begun, shards) -> dict:
    time.sleep(ctx.params["sleep_s"])
    return {"value": json.loads(open(begun).read())["value"] + sum(shards)}


def end(ctx, value, begun, shards) -> dict:
    time.sleep(ctx.params["sleep_s"])
    ctx.metric("value", value)
    return {"value": value}


def shard(ctx, item, begun) -> dict:
    time.sleep(ctx.params["sleep_s"])
    return {"square": item * item, "index": ctx.index}


def gather(ctx, square, index) -> dict:
    ctx.metric("total", sum(square))
    return {"total": sum(square), "order": index}


def fail(ctx, **inputs) -> dict:
    raise RuntimeError("this step fails on purpose")


def hold_memory(ctx) -> dict:
    """Start a child that holds ``hold_mb`` MiB for ``hold_s`` seconds."""
    mb, seconds = ctx.params.get("hold_mb", 0), ctx.params.get("hold_s", 0.2)
    code = f"import time; block = b'x' * ({mb} * 2**20); time.sleep({seconds})"
    subprocess.run([sys.executable, "-c", code], check=True)
    return {}


def burn_cpu(ctx) -> dict:
    """Spin for ``busy_s`` seconds of this process's CPU time."""
    start = time.process_time()
    while time.process_time() - start < ctx.params.get("busy_s", 0):
        pass
    return {}


def sleep_long(ctx) -> dict:
    time.sleep(60)
    return {}


def _single(name, fn):
    return Workload(name=name, ref=f"fakes:{name.upper()}", steps=(Step(name, fn),), scales=SCALES)


MEMORY = _single("memory", hold_memory)
CPU = _single("cpu", burn_cpu)
SLOW = _single("slow", sleep_long)

LINEAR = Workload(
    name="linear",
    ref="fakes:LINEAR",
    marker="training",
    steps=(
        Step("begin", begin),
        Step("middle", middle, needs=("begin",)),
        Step("end", end, needs=("middle", "begin")),
    ),
    scales=SCALES,
)

FANOUT = Workload(
    name="fanout",
    ref="fakes:FANOUT",
    marker="inference",
    steps=(
        Step("begin", begin),
        Step("shard", shard, needs=("begin",), foreach="shards"),
        Step("gather", gather, needs=("shard",)),
    ),
    scales=SCALES,
)

FAILING = Workload(
    name="failing",
    ref="fakes:FAILING",
    marker="training",
    steps=(Step("begin", begin), Step("fail", fail, needs=("begin",))),
    scales=SCALES,
)


class Sleepy(Architecture):
    """Runs a linear workload in the test process with a known delay before
    every step: its overhead is that delay times the number of steps."""

    name = "sleepy"
    delay_s = 0.15

    def run(self, workload, run):
        outputs = {}
        for step in workload.steps:
            time.sleep(self.delay_s)
            outputs[step.name] = execute_step(run.spec, step.name, step_inputs(workload, step, outputs))


class Priced(Architecture):
    """Runs any workload in the test process at a known price: ``fixed_s`` per
    run, ``task_s`` before each task, and per GiB a step leaves in the run's
    artifacts for the next ``gib_s``, or in native hand-off, where each task's
    files are linked into its consumer's own directory, ``native_gib_s``
    (scaling sweeps' injected truth)."""

    name = "priced"
    handoff_modes = ("shared", "native")
    fixed_s, task_s, gib_s, native_gib_s = 0.3, 0.05, 4.0, 8.0

    def run(self, workload, run):
        time.sleep(self.fixed_s)
        native = run.spec.handoff == "native"
        outputs = {}
        for step in workload.steps:
            inputs = step_inputs(workload, step, outputs)
            width = len(fanout_items(step, inputs)) if step.foreach else None
            before = directory_bytes(run.spec.artifacts)
            results = []
            for index in range(width or 1):
                time.sleep(self.task_s)
                task = index if width else None
                carried = self.carry(run, step, task, outputs) if native else None
                results.append(run_step(task_spec(run.spec, step.name, task), step.name, outputs, task, workload,
                                        carried))
            outputs[step.name] = results if width else results[0]
            written = directory_bytes(run.spec.artifacts) - before
            time.sleep(written / 2**30 * (self.native_gib_s if native else self.gib_s))

    @staticmethod
    def carry(run, step, index, outputs) -> dict:
        """Each producing task's directory, linked (so its own cost is next to nothing) for this task alone."""
        to = run.dir / "carried" / handoff.task_key(step.name, index)
        keys = handoff.keys({need: outputs[need] for need in step.needs})
        for key in keys:
            shutil.copytree(run.artifacts / key, to / key, copy_function=os.link)
        return {key: to / key for key in keys}


class Missing(Architecture):
    name = "missing"

    def check(self):
        from pytest_mlpbench import Unavailable

        raise Unavailable("missing: set MISSING_ENDPOINT to use it")


class NoFanout(InProcess):
    """``inprocess`` that declines workloads with fan-out, as SageMaker local mode must."""

    name = "no-fanout"

    def check_workload(self, workload):
        from pytest_mlpbench import Unavailable

        if any(step.foreach for step in workload.steps):
            raise Unavailable("no-fanout: this architecture runs no fan-out")


# -- faults (tests/test_fault_matrix.py) ---------------------------------------------------------
# Each fault step first leaves a note of when and where it faults, ``fault-<step>.json`` in the
# run's artifacts, for the test to time the detection. Their errors do not name the step: the
# architecture's message must.


def _fault_note(ctx, fault: str) -> None:
    import os
    import socket

    note = {"run_id": ctx.spec.run_id, "step": ctx.step, "fault": fault, "ns": time.time_ns(), "pid": os.getpid(),
            "host": socket.gethostname()}
    (ctx.artifacts / f"fault-{ctx.step}.json").write_text(json.dumps(note))


def explode(ctx, **inputs) -> dict:
    _fault_note(ctx, "raise")
    raise RuntimeError("this step raises on purpose")


def self_kill(ctx, **inputs) -> dict:
    """SIGKILL this step's own process. The first process of a container (PID 1
    of its PID namespace) cannot be killed from inside: there the signal is
    ignored, and the step waits to be killed from outside."""
    import os
    import signal

    _fault_note(ctx, "sigkill")
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(ctx.params.get("hold_s", 120))
    raise RuntimeError(f"SIGKILL to itself was ignored (pid {os.getpid()}) and nothing killed it")


def await_fault(ctx, **inputs) -> dict:
    """Hold the run for ``hold_s`` seconds (120 unless set) while a test injects a fault from outside."""
    _fault_note(ctx, "await")
    time.sleep(ctx.params.get("hold_s", 120))
    return {}


def _faulty(name: str, fn) -> Workload:
    return Workload(name=name, ref=f"fakes:{name.upper()}", marker="training",
                    steps=(Step("begin", begin), Step(fn.__name__, fn, needs=("begin",))), scales=SCALES)


RAISES = _faulty("raises", explode)
SELFKILL = _faulty("selfkill", self_kill)
AWAIT = _faulty("await", await_fault)


# -- native hand-off's fan-out case (tests/test_dvc.py, tests/test_metaflow.py) -------------------
# Each task writes a file of the same name in its own directory; the gather reads them all.

def seed_files(ctx) -> dict:
    path = Path(ctx.artifacts) / "seed.bin"
    path.write_bytes(b"s" * 100)
    return {"seed": str(path), "shards": [1, 2, 3]}


def part_file(ctx, item, seed) -> dict:
    path = Path(ctx.artifacts) / "part.bin"
    path.write_bytes(Path(seed).read_bytes()[:1] * (item * 1024))
    return {"part": str(path)}


def read_parts(ctx, part) -> dict:
    ctx.metric("bytes_read", float(sum(len(Path(p).read_bytes()) for p in part)))
    return {}


FILES_FANOUT = Workload(name="fanout-files", ref="fakes:FILES_FANOUT", handoff="native",
                        scales={s: {} for s in ("smoke", "small", "full")},
                        steps=(Step("begin", seed_files), Step("shard", part_file, needs=("begin",), foreach="shards"),
                               Step("gather", read_parts, needs=("shard",))))
