"""Scaling sweeps on every selected architecture: a chain of N light tasks, a
fan-out of W tasks (light, and CPU-bound), and a hand-off of S bytes from one
step to the next. ``mlpbench report`` fits the cost model from their runs."""
import pytest

from workloads import scaling

CHAIN = [1, 4, 16, 64]
WIDTHS = [1, 2, 4, 16]
HANDOFF = [2**20, 64 * 2**20, 512 * 2**20]


@pytest.mark.scaling
@pytest.mark.parametrize("tasks", CHAIN)
def test_chain(mlpbench, tasks):
    mlpbench.run(scaling.chain(tasks))


@pytest.mark.scaling
@pytest.mark.parametrize("cpu", [False, True], ids=["light", "cpu"])
@pytest.mark.parametrize("width", WIDTHS)
def test_fanout(mlpbench, width, cpu):
    [record, *_] = mlpbench.run(scaling.fanout(width, cpu))
    assert record.metrics["tasks"] == width


@pytest.mark.scaling
@pytest.mark.parametrize("size", HANDOFF)
def test_handoff(mlpbench, size):
    [record, *_] = mlpbench.run(scaling.handoff(size))
    assert record.metrics["bytes_read"] == size
