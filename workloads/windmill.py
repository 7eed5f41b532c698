"""The Windmill orchestrator benchmark as workloads: anchors that tie our
figures to published ones (see docs/anchors.md).

- ``windmill-light``: 40 tasks in a chain, each computing ``fibo(10)``.
- ``windmill-long``: 10 tasks in a chain, each computing ``fibo(33)``.

As in Windmill's Airflow DAG, each task returns its Fibonacci number and takes
nothing from the task before it: the chain only orders them. The number
travels as the step's output ``fib`` (so every architecture carries it to the
next step, which ignores it) and as the metric ``fib`` of its step event (the
run record's ``fib`` is the last task's).

Scales ``small`` (the default) and ``full`` are the published shape
(:data:`PUBLISHED`); ``smoke`` keeps the chains but computes ``fibo(20)`` in the
long tasks, a quick check that is not comparable with the published figures.
"""
from __future__ import annotations

from pytest_mlpbench.model.workload import Step, Workload

HERE = "workloads.windmill"
#: The published shape of each workload: chain length and Fibonacci argument.
PUBLISHED = {"windmill-light": {"tasks": 40, "n": 10}, "windmill-long": {"tasks": 10, "n": 33}}
#: The scales that run the published shape.
PUBLISHED_SCALES = ("small", "full")
SMOKE_N = {"windmill-light": 10, "windmill-long": 20}


def fibo(n: int) -> int:
    """Naive recursive Fibonacci, as in the benchmark: the work is the calls."""
    if n <= 1:
        return n
    return fibo(n - 1) + fibo(n - 2)


def task(ctx, **previous) -> dict:
    """One task of the chain; ``previous`` (the last task's ``fib``) is not used."""
    value = fibo(ctx.params["n"])
    ctx.metric("fib", value)
    return {"fib": value}


def _chain(name: str) -> Workload:
    tasks = PUBLISHED[name]["tasks"]
    steps = tuple(Step(f"task_{i:02d}", f"{HERE}:task", needs=(f"task_{i - 1:02d}",) if i else ())
                  for i in range(tasks))
    scales = {scale: dict(PUBLISHED[name]) for scale in PUBLISHED_SCALES}
    scales["smoke"] = {"tasks": tasks, "n": SMOKE_N[name]}
    return Workload(name=name, ref=f"{HERE}:{name.split('-')[1].upper()}", steps=steps, scales=scales,
                    marker="anchors", builtin=True)


LIGHT = _chain("windmill-light")
LONG = _chain("windmill-long")
