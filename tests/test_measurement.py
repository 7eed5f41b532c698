"""The measurements, checked against known truth: injected delays, a child
holding a known amount of memory, a loop burning a known CPU time."""
import pytest

RUN_WITH_PARAMS = """
import pytest

@pytest.mark.parametrize("value", {values})
def test_{name}(mlpbench, value):
    mlpbench.run("{name}", {param}=value)
"""


def medians_by(bench, key):
    return {
        (b["params"]["mlpbench_arch"], b["params"].get("value")): b["extra_info"]["mlpbench"]["median"][key]
        for b in bench.benchmarks()
    }


def test_injected_delays_are_measured_back_as_overhead(bench):
    bench.tests()
    result = bench.run("--mlpbench-arch=sleepy", "--mlpbench-rounds=3", "--mlpbench-scale=smoke")
    result.assert_outcomes(passed=1)
    (benchmark,) = bench.benchmarks()
    injected = 3 * 0.15  # fakes.Sleepy sleeps 0.15 s before each of the 3 steps
    for round_ in benchmark["extra_info"]["mlpbench"]["rounds"]:
        assert round_["overhead_s"] == pytest.approx(injected, abs=0.020)
        assert round_["compute_s"] == pytest.approx(3 * 0.05, abs=0.020)  # each step sleeps 0.05 s
        assert round_["startup_s"] == pytest.approx(0.15, abs=0.020)
        assert all(gap == pytest.approx(0.15, abs=0.020) for key, gap in round_["gaps"].items() if key != "begin->end")


@pytest.mark.parametrize("arch", ["inprocess", "subprocess"])
def test_short_lived_child_memory_shows_as_peak(bench, arch):
    bench.tests(RUN_WITH_PARAMS.format(name="memory", param="hold_mb", values=[0, 300]))
    result = bench.run(f"--mlpbench-arch={arch}", "--mlpbench-rounds=1")
    result.assert_outcomes(passed=2)
    peaks = medians_by(bench, "peak_rss_bytes")
    assert peaks[(arch, 300)] - peaks[(arch, 0)] >= 0.9 * 300 * 2**20
    assert peaks[(arch, 0)] < 300 * 2**20  # without the child the tree is well below it


@pytest.mark.parametrize("arch", ["inprocess", "subprocess"])
def test_busy_loop_cpu_time_is_measured(bench, arch):
    bench.tests(RUN_WITH_PARAMS.format(name="cpu", param="busy_s", values=[0, 1.0]))
    result = bench.run(f"--mlpbench-arch={arch}", "--mlpbench-rounds=1")
    result.assert_outcomes(passed=2)
    cpu = medians_by(bench, "cpu_s")
    assert cpu[(arch, 1.0)] - cpu[(arch, 0)] == pytest.approx(1.0, rel=0.10)
