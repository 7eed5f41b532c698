"""Benchmarks under pytest-xdist: whole architectures per worker, pinned cores,
one merged result."""
from __future__ import annotations

import json
import os
import sqlite3
import statistics

import pytest

from conftest import bench_source

from pytest_mlpbench.sinks.otlp_file import attributes, read_otlp_json

pytestmark = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores for 2 workers")

ARCHS = "--mlpbench-arch=inprocess,subprocess"


def test_serial_and_two_workers_give_the_same_benchmarks_and_one_merged_result(bench):
    """The same benchmarks and runs; one JSON, one runs.jsonl, and one export of
    each run to OpenTelemetry (its steps' spans under its own) and MLflow."""
    bench.tests(bench_source("linear", "fanout"))
    serial = bench.run(ARCHS, "--mlpbench-rounds=2", "--mlpbench-scale=smoke")
    serial.assert_outcomes(passed=4)
    serial_names = sorted(b["fullname"] for b in bench.benchmarks())
    serial_runs = sorted((r["architecture"], r["workload"], r["round"]) for r in bench.runs())
    (bench.path / "results").rename(bench.path / "serial-results")

    uri = f"sqlite:///{bench.path / 'mlflow.db'}"
    parallel = bench.run(ARCHS, "--mlpbench-rounds=2", "--mlpbench-scale=smoke", "-n", "2",
                         "--mlpbench-otel-file=otel.jsonl", f"--mlpbench-mlflow-uri={uri}")
    parallel.assert_outcomes(passed=4)
    benchmarks = bench.benchmarks()
    assert sorted(b["fullname"] for b in benchmarks) == serial_names
    assert all(b["stats"]["rounds"] == 2 for b in benchmarks)
    runs = bench.runs()
    assert sorted((r["architecture"], r["workload"], r["round"]) for r in runs) == serial_runs
    cores = {r["architecture"]: tuple(r["cores"]) for r in runs}
    assert len(set(cores.values())) == 2 and all(len(c) == 1 for c in cores.values())  # one core each, apart
    assert len({(r["architecture"], tuple(r["cores"]), r["worker"]) for r in runs}) == 2  # each on one worker
    assert (bench.path / "results" / "summary.md").is_file()
    check_exported_once(bench, runs)
    parallel.stdout.fnmatch_lines([f"*mlpbench: logged 8 runs to MLflow at {uri}*"])


def check_exported_once(bench, runs):
    spans, _ = read_otlp_json(bench.path / "otel.jsonl")
    roots = [s for s in spans if not s.get("parentSpanId")]
    assert sorted(attributes(s["attributes"])["mlpbench.run_id"] for s in roots) == sorted(r["run_id"] for r in runs)
    for root, run in zip(sorted(roots, key=lambda s: attributes(s["attributes"])["mlpbench.run_id"]),
                         sorted(runs, key=lambda r: r["run_id"])):
        children = [s for s in spans if s.get("parentSpanId") == root["spanId"]]
        assert len(children) == len(run["steps"])  # linear: 3 steps; fanout: begin, three shards, gather
    # read with sqlite3: mlflow imported in the test process would disable the standard library's
    # importlib.metadata finder (its importlib_metadata does), and pytester then removes the backport's
    with sqlite3.connect(bench.path / "mlflow.db") as db:
        logged = [value for (value,) in db.execute("SELECT value FROM tags WHERE key = 'mlpbench.run_id'")]
    assert sorted(logged) == sorted(r["run_id"] for r in runs)


MARKED = """

@pytest.mark.mlpbench_fail("cpu_s:max:+1000%")
def test_marked(mlpbench):
    mlpbench.run("linear")
"""


def test_gates_judge_the_merged_rounds_once_with_the_workers_markers(bench):
    bench.tests(bench_source("linear") + MARKED)
    gate = ("-n", "2", "--benchmark-autosave", "--mlpbench-rounds=3", "--mlpbench-fail=wall_s:median:+100%")
    bench.run(ARCHS, *gate).assert_outcomes(passed=4)
    result = bench.run(ARCHS, *gate)
    result.assert_outcomes(passed=4)
    assert result.ret == pytest.ExitCode.OK
    out = result.stdout.str()
    assert out.count("mlpbench gates (baseline: ") == 1
    rows = [line.split()[:2] for line in result.stdout.lines if line.startswith("test_bench.py::") and "  " in line]
    assert sorted(rows) == sorted([f"test_bench.py::test_{name}[{arch}]", metric]
                                  for arch in ("inprocess", "subprocess")
                                  for name, metric in (("linear", "wall_s"), ("marked", "wall_s"), ("marked", "cpu_s")))


@pytest.mark.parametrize("workers", [
    ("-n", "2", f"--mlpbench-cores-per-worker={len(os.sched_getaffinity(0))}"),
    ("-d", "--tx", f"{len(os.sched_getaffinity(0)) + 1}*popen"),
], ids=["cores-per-worker", "tx"])
def test_fewer_cores_than_workers_is_a_usage_error(bench, workers):
    bench.tests()
    result = bench.run(ARCHS, *workers)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlpbench-cores-per-worker: * workers with * core(s) each need * cores*"])


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


def test_a_crashed_worker_keeps_the_runs_it_wrote(bench):
    """A worker that dies sends nothing; the runs it wrote to its own files are
    still merged, the session says what was lost and fails, and the benchmark
    that killed it is not run again."""
    bench.tests("""
import os

def test_a(mlpbench):
    mlpbench.run("linear")

def test_b(mlpbench):
    if mlpbench.arch_name == "inprocess":
        os._exit(3)
    mlpbench.run("linear")
""")
    result = bench.run(ARCHS, "-n", "2", "--mlpbench-rounds=2")
    result.assert_outcomes(passed=3, failed=1)
    assert result.stdout.str().count("replacing crashed worker") == 1  # its replacement does not run test_b again
    runs = bench.runs()
    assert sorted((r["architecture"], r["round"]) for r in runs if r["architecture"] == "inprocess") == [
        ("inprocess", 0), ("inprocess", 1)]
    result.stdout.fnmatch_lines(["*worker gw* stopped without sending its results*2 run(s) it wrote were kept*"])
