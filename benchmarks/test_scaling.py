"""Scaling sweeps on every selected architecture: chains of N light tasks,
fan-outs of W tasks (light, and CPU-bound), and hand-offs of S bytes from one
step to the next, at the sizes of --mlpbench-chain-sizes, --mlpbench-fanout-widths
and --mlpbench-handoff-sizes (carried as --mlpbench-handoff-modes say). The report fits the cost model from their runs."""
import pytest

from pytest_mlpbench.plugin import SESSION
from workloads import scaling

SIZES = {"tasks": "chain_sizes", "width": "fanout_widths", "size": "handoff_sizes", "mode": "handoff_modes"}


def pytest_generate_tests(metafunc):
    settings = metafunc.config.stash[SESSION].settings
    for param, option in SIZES.items():
        if param in metafunc.fixturenames:
            metafunc.parametrize(param, settings.get(option))


@pytest.mark.scaling
def test_chain(mlpbench, tasks):
    mlpbench.run(scaling.chain(tasks))


@pytest.mark.scaling
@pytest.mark.parametrize("cpu", [False, True], ids=["light", "cpu"])
def test_fanout(mlpbench, width, cpu):
    [record, *_] = mlpbench.run(scaling.fanout(width, cpu))
    assert record.metrics["tasks"] == width


@pytest.mark.scaling
def test_handoff(mlpbench, size, mode):
    [record, *_] = mlpbench.run(scaling.handoff(size, mode))
    assert record.metrics["bytes_read"] == size
