"""Small workloads and architectures with known behaviour, for the plugin's tests.

Importable by step processes too: architectures pass the test process's
``sys.path`` on, so ``fakes`` resolves in any child.
"""
from __future__ import annotations

import json
import time

import subprocess
import sys

from pytest_mlpbench import Architecture, Step, Workload
from pytest_mlpbench.architectures.inprocess import InProcess
from pytest_mlpbench.events import execute_step
from pytest_mlpbench.workload import step_inputs

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
