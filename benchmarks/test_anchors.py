"""Anchors: the Windmill orchestrator benchmark (40 light tasks, 10 long ones,
each a naive ``fibo(N)``) on every selected architecture, so its published
figures can be set beside ours. At the default scale (``small``) and at
``full`` it runs the published shape; ``smoke`` is a quick check only.
See docs/anchors.md."""
import pytest

from workloads import windmill


def check(records, workload):
    assert records, "no measured round"
    tasks = [step.name for step in workload.steps]
    for record in records:
        assert [s["step"] for s in record.steps] == tasks, "a task did not report"
        assert record.metrics["fib"] == windmill.fibo(record.params["n"]), "a task computed the wrong number"


@pytest.mark.anchors
def test_windmill_light(mlpbench):
    check(mlpbench.run(windmill.LIGHT), windmill.LIGHT)


@pytest.mark.anchors
def test_windmill_long(mlpbench):
    check(mlpbench.run(windmill.LONG), windmill.LONG)
