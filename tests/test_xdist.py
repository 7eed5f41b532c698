"""Benchmarks under pytest-xdist: whole architectures per worker, pinned cores,
one merged result."""
from __future__ import annotations

import json
import os
import statistics

import pytest

from conftest import bench_source

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores for 2 workers")

ARCHS = "--mlpbench-arch=inprocess,subprocess"


def test_serial_and_two_workers_give_the_same_benchmarks_and_one_merged_result(bench):
    bench.tests(bench_source("linear", "fanout"))
    serial = bench.run(ARCHS, "--mlpbench-rounds=2", "--mlpbench-scale=smoke")
    serial.assert_outcomes(passed=4)
    serial_names = sorted(b["fullname"] for b in bench.benchmarks())
    serial_runs = sorted((r["architecture"], r["workload"], r["round"]) for r in bench.runs())
    (bench.path / "results").rename(bench.path / "serial-results")

    parallel = bench.run(ARCHS, "--mlpbench-rounds=2", "--mlpbench-scale=smoke", "-n", "2")
    parallel.assert_outcomes(passed=4)
    benchmarks = bench.benchmarks()
    assert sorted(b["fullname"] for b in benchmarks) == serial_names
    assert all(b["stats"]["rounds"] == 2 for b in benchmarks)
    runs = bench.runs()
    assert sorted((r["architecture"], r["workload"], r["round"]) for r in runs) == serial_runs
    cores = {r["architecture"]: tuple(r["cores"]) for r in runs}
    assert len(set(cores.values())) == 2 and all(len(c) == 1 for c in cores.values())  # one core each, apart
    assert len({(r["architecture"], tuple(r["cores"])) for r in runs}) == 2  # each architecture on one worker
    assert (bench.path / "results" / "summary.md").is_file()
    bench.run(ARCHS, "--mlpbench-rounds=2", "--mlpbench-scale=smoke", "-n", "2").assert_outcomes(passed=4)
    assert len(bench.runs()) == 2 * len(runs)  # a worker sends this session's runs, not its file's earlier ones


def test_gates_judge_the_merged_rounds_once(bench):
    bench.tests(bench_source("linear"))
    gate = ("-n", "2", "--benchmark-autosave", "--mlpbench-rounds=3", "--mlpbench-fail=wall_s:median:+100%")
    bench.run(ARCHS, *gate).assert_outcomes(passed=2)
    result = bench.run(ARCHS, *gate)
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    assert out.count("mlpbench gates (baseline: ") == 1
    assert "test_linear[inprocess]" in out and "test_linear[subprocess]" in out


def test_fewer_cores_than_workers_is_a_usage_error(bench):
    bench.tests()
    result = bench.run(ARCHS, "-n", "2", f"--mlpbench-cores-per-worker={len(os.sched_getaffinity(0))}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlpbench-cores-per-worker: 2 workers with * core(s) each need * cores*"])


def test_a_cpu_bound_step_on_its_pinned_core_takes_its_serial_time(bench):
    """Known truth: a step that burns 1 s of CPU. Pinned to a core of its own,
    it takes about 1 s of wall time, as it does serially; two such steps on
    one shared core would take twice as long."""
    bench.tests("def test_cpu(mlpbench):\n    mlpbench.run('cpu', busy_s=1.0)\n")
    bench.run(ARCHS, "--mlpbench-rounds=3").assert_outcomes(passed=2)
    serial = {a: statistics.median(r["steps"][0]["duration_s"] for r in bench.runs()
                                   if r["architecture"] == a and not r["warmup"]) for a in ("inprocess", "subprocess")}
    (bench.path / "results").rename(bench.path / "serial-results")
    bench.run(ARCHS, "--mlpbench-rounds=3", "-n", "2").assert_outcomes(passed=2)
    for arch in ("inprocess", "subprocess"):
        runs = [r for r in bench.runs() if r["architecture"] == arch and not r["warmup"]]
        for run in runs:
            step = run["steps"][0]
            assert step["cpu_s"] == pytest.approx(1.0, rel=0.10)
            assert step["duration_s"] == pytest.approx(serial[arch], rel=0.15), json.dumps(run["cores"])


@pytest.mark.parametrize("sink", ["--mlpbench-otel=console", "--mlpbench-mlflow-uri=mlruns"])
def test_sinks_under_xdist_are_refused_with_the_reason(bench, sink):
    bench.tests()
    result = bench.run(ARCHS, "-n", "2", sink)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*not yet under pytest-xdist (-n)*: each worker would export its own*"])
