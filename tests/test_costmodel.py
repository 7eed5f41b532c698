"""The cost model: least squares with confidence intervals, and each
coefficient recovered from a sweep of an architecture whose price is known."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REGISTER
from pytest_mlpbench.results.costmodel import fit, linear_fit, side_by_side, sized, table
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
    for name in ("chain-3", "fanout-4", "fanout-cpu-2", "handoff-1024", "handoff-native-1024"):
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
@pytest.mark.parametrize("mode", ["shared", "native"])
def test_handoff(mlpbench, size, mode):
    [record, *_] = mlpbench.run(scaling.handoff(size, mode))
    assert record.metrics["bytes_read"] == size and record.handoff == mode

@pytest.mark.parametrize("w", [1, 2])
def test_fanout_cpu(mlpbench, w):
    mlpbench.run(scaling.fanout(w, cpu=True))
"""


def test_a_known_price_is_recovered_within_ten_percent(bench):
    """Injected truth: an architecture that sleeps 0.3 s per run, 0.05 s before
    each task, and 4 s per GiB a step hands on (8 s through its "data layer"),
    and runs one task at a time."""
    bench.pytester.makeconftest(REGISTER + "\n    registry.add_architecture('priced', Priced)\n")
    bench.tests(SWEEP)
    bench.run("--mlpbench-arch=priced", "--mlpbench-rounds=2", "--mlpbench-scale=smoke").assert_outcomes(passed=14)
    model = {c.name: c for c in fit(bench.runs())["priced"]}
    truth = {"fixed_s": 0.3, "per_task_s": 0.05, "per_parallel_task_s": 0.05, "per_gib_s": 4.0,
             "per_gib_native_s": 8.0}
    assert {name: c.value for name, c in model.items()} == pytest.approx(truth, rel=0.10), json.dumps(
        {name: c.text() for name, c in model.items()})
    assert model["per_task_s"].runs == 6
    report = (bench.path / "results" / "report.md").read_text()
    assert side_by_side(bench.runs()) == {"priced": 1}
    assert table({"priced": list(model.values())}, {"priced": 1})[2] in report.splitlines()
    assert "![scaling](scaling.png)" in report and (bench.path / "results" / "scaling.png").stat().st_size > 0


def test_sweep_sizes_come_from_their_options(pytester):
    assert scaling.byte_sizes("1MiB, 3,2KiB") == [2**20, 3, 2048] and scaling.counts("1,16") == [1, 16]
    bench_dir = Path(__file__).parent.parent / "benchmarks"
    result = pytester.runpytest_subprocess(str(bench_dir / "test_scaling.py"), "--collect-only", "-q",
                                           "--mlpbench-arch=inprocess", "--mlpbench-chain-sizes=2,3",
                                           "--mlpbench-fanout-widths=5", "--mlpbench-handoff-sizes=1KiB",
                                           "--mlpbench-handoff-modes=native")
    ids = [line.rpartition("::")[2] for line in result.stdout.lines if "::" in line]
    assert ids == ["test_chain[2-inprocess]", "test_chain[3-inprocess]", "test_fanout[5-inprocess-light]",
                   "test_fanout[5-inprocess-cpu]", "test_handoff[1024-native-inprocess]"]
    assert scaling.modes("native, shared") == ["native", "shared"]
    with pytest.raises(ValueError, match="expected shared, native or both"):
        scaling.modes("cached")
    result = pytester.runpytest_subprocess(str(bench_dir / "test_scaling.py"), "--mlpbench-chain-sizes=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlpbench-chain-sizes='0': expected comma-separated whole numbers of 1 or more*"])


def test_native_hand_off_needs_a_data_layer():
    from pytest_mlpbench import Unavailable
    from pytest_mlpbench.architectures.inprocess import InProcess
    from pytest_mlpbench.architectures.sagemaker.local import SageMakerLocal

    native = scaling.handoff(1, "native")
    with pytest.raises(Unavailable, match="inprocess: carries files between steps only as shared, and workload "
                                          "'handoff-native-1' asks for 'native' hand-off"):
        InProcess().handoff(native)
    assert InProcess().handoff(scaling.handoff(1)) == "shared"
    sagemaker = SageMakerLocal()  # its channels carry every step's files, mounted at the same paths
    assert sagemaker.handoff(native) == "shared" and sagemaker.handoff_used("shared") == "native"
