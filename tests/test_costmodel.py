"""The cost model: least squares with confidence intervals, and each
coefficient recovered from a sweep of an architecture whose price is known."""
from __future__ import annotations

import json

import pytest

from conftest import REGISTER
from pytest_mlpbench.results.costmodel import fit, linear_fit, sized, table
from workloads import scaling

MIB = 2**20


def test_an_exact_line_is_recovered_and_noise_widens_the_interval():
    (a, da), (b, db) = linear_fit([1, 4, 16, 1, 4, 16], [0.35, 0.5, 1.1, 0.35, 0.5, 1.1])
    assert (a, b) == (pytest.approx(0.3), pytest.approx(0.05)) and da == pytest.approx(0, abs=1e-9)
    (a, da), (b, db) = linear_fit([1, 4, 16, 1, 4, 16], [0.36, 0.49, 1.12, 0.34, 0.51, 1.08])
    assert a - da < 0.3 < a + da and b - db < 0.05 < b + db and da > 0.001


@pytest.mark.parametrize("xs", [[1, 2], [4, 4, 4]])
def test_too_few_points_or_sizes_fit_nothing(xs):
    assert linear_fit(xs, [1.0] * len(xs)) is None


def test_scaling_workloads_are_found_again_from_their_refs():
    for name in ("chain-3", "fanout-4", "fanout-cpu-2", "handoff-1024"):
        workload = scaling.workload(name)
        module, _, attr = workload.ref.partition(":")
        assert getattr(scaling, attr) == workload and workload.marker == "scaling"
    assert [s.needs for s in scaling.chain(3).steps] == [(), ("t000",), ("t001",)]
    assert sized("fanout-cpu-2") is None and sized("chain-3") == ("chain", 3)
    with pytest.raises(AttributeError):
        scaling.chain_0


SWEEP = f"""
import pytest
from workloads import scaling

@pytest.mark.parametrize("n", [1, 4, 16])
def test_chain(mlpbench, n):
    mlpbench.run(scaling.chain(n))

@pytest.mark.parametrize("w", [1, 4, 8])
def test_fanout(mlpbench, w):
    mlpbench.run(scaling.fanout(w))

@pytest.mark.parametrize("size", [{16 * MIB}, {64 * MIB}, {128 * MIB}])
def test_handoff(mlpbench, size):
    mlpbench.run(scaling.handoff(size))
"""


def test_a_known_price_is_recovered_within_ten_percent(bench):
    """Injected truth: an architecture that sleeps 0.3 s per run, 0.05 s before
    each task and 4 s per GiB a step hands on."""
    bench.pytester.makeconftest(REGISTER + "\n    registry.add_architecture('priced', Priced)\n")
    bench.tests(SWEEP)
    bench.run("--mlpbench-arch=priced", "--mlpbench-rounds=2").assert_outcomes(passed=9)
    model = {c.name: c for c in fit(bench.runs())["priced"]}
    truth = {"fixed_s": 0.3, "per_task_s": 0.05, "per_parallel_task_s": 0.05, "per_gib_s": 4.0}
    assert {name: c.value for name, c in model.items()} == pytest.approx(truth, rel=0.10), json.dumps(
        {name: c.text() for name, c in model.items()})
    assert model["per_task_s"].runs == 6
    report = (bench.path / "results" / "report.md").read_text()
    assert table({"priced": list(model.values())})[2] in report.splitlines()
    assert "![scaling](scaling.png)" in report and (bench.path / "results" / "scaling.png").stat().st_size > 0
