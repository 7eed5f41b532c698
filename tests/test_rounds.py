"""No benchmark passes without measured rounds, and pytest-benchmark times
exactly what the run records call ``wall_s``."""
import pytest

from conftest import bench_source


def test_pytest_benchmark_times_exactly_the_run(bench):
    bench.tests()
    result = bench.run("--mlpbench-arch=inprocess,sleepy", "--mlpbench-rounds=5", "--mlpbench-scale=smoke")
    result.assert_outcomes(passed=2)
    for benchmark in bench.benchmarks():
        rounds = benchmark["extra_info"]["mlpbench"]["rounds"]
        timed = benchmark["stats"]["data"]
        assert len(timed) == len(rounds) == 5
        for seconds, record in zip(timed, rounds):
            assert seconds == pytest.approx(record["wall_s"], abs=0.001)


def test_disabled_pytest_benchmark_still_measures_every_round_and_says_so(bench):
    bench.tests()
    result = bench.run("--mlpbench-arch=inprocess,subprocess", "--mlpbench-rounds=2", "--benchmark-disable",
                       "--mlpbench-fail=wall_s:median:+10%")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*pytest-benchmark is disabled, so mlpbench timed the 2 rounds itself*",
                                 "*mlpbench gates: not evaluated: pytest-benchmark is disabled*"])
    runs = bench.runs()
    assert [(r["architecture"], r["outcome"], r["warmup"]) for r in runs] == [
        ("inprocess", "passed", False), ("inprocess", "passed", False),
        ("subprocess", "passed", False), ("subprocess", "passed", False)]
    assert all(r["wall_s"] > r["compute_s"] > 0 for r in runs)


def test_disabled_pytest_benchmark_still_fails_a_failing_run(bench):
    bench.tests(bench_source("failing"))
    result = bench.run("--mlpbench-arch=inprocess", "--benchmark-disable")
    result.assert_outcomes(failed=1)
    assert [r["outcome"] for r in bench.runs()] == ["failed"]


def test_skipped_benchmarks_are_skips_with_the_reason(bench):
    bench.tests()
    result = bench.run("--mlpbench-arch=inprocess", "--benchmark-skip", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*--benchmark-skip*"])
    assert not (bench.path / "results" / "runs.jsonl").exists()
