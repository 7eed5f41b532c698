"""Black-box tests of the plugin: options, markers, ids, skips, recorded fields."""
import contextlib
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import bench_source, default_sigint

from pytest_mlpbench.measure.record import FIGURES
from pytest_mlpbench.options import timeout
from pytest_mlpbench.plugin import everything
from pytest_mlpbench.session import BenchSession

REPO = Path(__file__).parents[1]


def test_help_shows_the_option_group(bench):
    result = bench.pytester.runpytest_subprocess("--help")
    result.stdout.fnmatch_lines(["mlpbench: ML pipeline architecture benchmarks:", "*--mlpbench-arch=NAMES*"])
    for flag in ("scale", "rounds", "warmup", "sample-interval", "results", "timeout", "data-dir"):
        assert f"--mlpbench-{flag}" in result.stdout.str()


@pytest.mark.parametrize(
    "arg, message",
    [
        ("--mlpbench-arch=nope", "*unknown architecture 'nope'; valid: inprocess, subprocess*"),
        ("--mlpbench-scale=huge", "*--mlpbench-scale='huge': valid values are smoke, small, full*"),
        ("--mlpbench-rounds=0", "*--mlpbench-rounds='0': expected a whole number of 1 or more*"),
        ("--mlpbench-rounds=many", "*--mlpbench-rounds='many': expected a whole number of 1 or more*"),
        ("--mlpbench-sample-interval=-1", "*expected a number of seconds greater than 0*"),
        ("--mlpbench-timeout=nan", "*--mlpbench-timeout='nan': expected a number of seconds greater than 0*"),
        ("--mlpbench-data-dir=/no/such/dir", "*--mlpbench-data-dir='/no/such/dir': no such directory: /no/such/dir*"),
    ],
)
def test_bad_options_are_usage_errors(bench, arg, message):
    bench.tests()
    result = bench.run(arg)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_ini_values_are_used_and_checked(bench):
    bench.tests()
    bench.pytester.makeini("[pytest]\nmlpbench_rounds = 2\nmlpbench_arch = inprocess\n")
    result = bench.run()
    result.assert_outcomes(passed=1)
    assert len(bench.benchmarks()[0]["extra_info"]["mlpbench"]["rounds"]) == 2
    bench.pytester.makeini("[pytest]\nmlpbench_scale = tiny\n")
    result = bench.run()
    result.stderr.fnmatch_lines(["*ini mlpbench_scale='tiny': valid values are smoke, small, full*"])


def test_markers_are_registered_and_select(bench):
    bench.tests(bench_source("linear", "fanout"))
    result = bench.run("--strict-markers", "-m", "inference", "--mlpbench-arch=inprocess", "-v")
    result.stdout.fnmatch_lines(["*test_fanout[[]inprocess[]] PASSED*"])
    result.assert_outcomes(passed=1, deselected=1)


def test_ids_and_skip_reasons(bench):
    bench.tests()
    result = bench.run("--mlpbench-arch=inprocess,missing", "-rs", "-v")
    result.stdout.fnmatch_lines(
        ["*test_linear[[]inprocess[]] PASSED*", "*test_linear[[]missing[]] SKIPPED*", "*missing: set MISSING_ENDPOINT*"]
    )


def test_missing_sdk_skips_with_install_hint(bench):
    bench.pytester.makeconftest(
        "def pytest_mlpbench_register(registry):\n"
        "    from fakes import LINEAR\n"
        "    registry.add_workload(LINEAR)\n"
        "    registry.add_architecture('ghost', 'no_such_sdk.arch:Ghost', 'pip install ghost-sdk')\n"
    )
    bench.tests()
    result = bench.run("--mlpbench-arch=ghost", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*ghost: cannot import no_such_sdk.arch*pip install ghost-sdk*"])


def test_benchmark_json_holds_the_run_records(bench):
    bench.tests()
    result = bench.run("--mlpbench-arch=inprocess,subprocess", "--mlpbench-rounds=2", "--mlpbench-scale=smoke")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*mlpbench: medians per architecture*", "architecture*overhead (s)*"])
    by_arch = {b["params"]["mlpbench_arch"]: b for b in bench.benchmarks()}
    assert set(by_arch) == {"inprocess", "subprocess"}
    info = by_arch["subprocess"]["extra_info"]["mlpbench"]
    assert info["workload"] == "linear" and info["scale"] == "smoke"
    assert len(info["rounds"]) == 2 and by_arch["subprocess"]["stats"]["rounds"] == 2
    for name in FIGURES:
        assert name in info["median"]
    first = info["rounds"][0]
    assert [s["step"] for s in first["steps"]] == ["begin", "middle", "end"]
    assert set(first["gaps"]) == {"begin->middle", "middle->end", "begin->end"}
    assert first["value"] == 7  # the workload's own metric, from the last step
    assert first["processes"] >= 3  # one fresh process per step
    machine = bench.pytester.path.joinpath("bench.json").read_text()
    assert '"psutil"' in machine and '"torch"' in machine


def test_results_directory(bench):
    bench.tests()
    bench.run("--mlpbench-arch=inprocess", "--mlpbench-rounds=2", "--mlpbench-results=out", "--mlpbench-keep-artifacts=yes")
    out = bench.path / "out"
    kept = sorted((out / "artifacts").glob("*/begin.json"))
    assert len(kept) == 2 and kept[0].read_text() == '{"value": 1}'

    assert len((out / "runs.jsonl").read_text().splitlines()) == 2
    assert (out / "runs.csv").read_text().startswith("run_id,architecture,workload,scale,round")
    assert "| inprocess | linear |" in (out / "summary.md").read_text()
    assert "begin" in (out / "steps.csv").read_text()
    assert len(list((out / "series").glob("*.csv"))) == 2


def test_failed_run_is_recorded_and_fails_the_test(bench):
    bench.tests(bench_source("failing"))
    result = bench.run("--mlpbench-arch=inprocess,subprocess")
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*this step fails on purpose*"])
    runs = bench.runs()
    assert [r["outcome"] for r in runs] == ["failed", "failed"]
    assert all(r["steps"][0]["step"] == "begin" and r["steps"][-1]["outcome"] == "failed" for r in runs)
    assert "## Failed runs" in (bench.path / "results" / "summary.md").read_text()


@pytest.mark.parametrize("arch", ["subprocess", "inprocess"])
def test_timeout_kills_the_run_and_records_it(bench, arch):
    bench.tests("def test_slow(mlpbench):\n    mlpbench.run('slow')\n")
    result = bench.run(f"--mlpbench-arch={arch}", "--mlpbench-timeout=1")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*timeout: run exceeded --mlpbench-timeout=1s*"])
    (run,) = bench.runs()
    assert run["outcome"] == "timeout" and 1 <= run["wall_s"] < 10
    assert not step_processes(bench.path)


@pytest.mark.parametrize("value, scale, limit", [(None, "smoke", 600.0), (None, "full", 14400.0), ("auto", "small", 1800.0),
                                                 ("none", "small", None), ("0", "smoke", None), ("2.5", "full", 2.5)])
def test_every_run_has_a_time_limit_unless_turned_off(value, scale, limit, tmp_path):
    registry = everything()
    settings = registry.options.defaults(scale=scale, **({} if value is None else {"timeout": timeout(value)}))
    assert BenchSession(settings, registry, tmp_path).run_timeout_s() == limit


def step_processes(path) -> list[psutil.Process]:
    """Step processes of runs started from ``path`` that are still alive."""
    found = []
    for proc in psutil.process_iter(["cmdline", "cwd"]):
        if "pytest_mlpbench.step" in (proc.info["cmdline"] or []) and str(path) in (proc.info["cwd"] or ""):
            found.append(proc)
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_session_keeps_the_run_and_stops_its_processes(bench, sig):
    bench.tests(bench_source("slow"))
    session = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--mlpbench-arch=subprocess",
         "--mlpbench-warmup=0", "--benchmark-json=bench.json"],
        cwd=bench.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, preexec_fn=default_sigint,
    )
    try:
        deadline = time.monotonic() + 60
        while not step_processes(bench.path):
            assert time.monotonic() < deadline and session.poll() is None, session.stdout.read().decode()
            time.sleep(0.1)
        session.send_signal(sig)
        output = session.communicate(timeout=30)[0].decode()
    finally:
        session.kill()  # only if it hung
        for proc in step_processes(bench.path):
            with contextlib.suppress(psutil.Error):
                proc.kill()
    assert "Traceback" not in output and bench.benchmarks() == []
    (run,) = bench.runs()
    assert run["outcome"] == "interrupted"
    assert not step_processes(bench.path)


def test_registered_workloads_run_in_the_workloads_suite(bench):
    bench.tests((REPO / "benchmarks" / "test_workloads.py").read_text(), name="test_workloads")
    result = bench.run("--mlpbench-arch=inprocess", "-m", "inference", "-v")
    result.stdout.fnmatch_lines(["*test_workload[[]fanout-inprocess[]] PASSED*"])
    result.assert_outcomes(passed=1, deselected=5)  # linear, failing, memory, cpu, slow: training


def test_readme_extension_example_works(pytester):
    readme = (REPO / "README.md").read_text()
    example = readme.split("```python\n", 1)[1].split("```", 1)[0]
    pytester.makeconftest(example)
    pytester.makepyfile(test_workloads=(REPO / "benchmarks" / "test_workloads.py").read_text())
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-m", "training", "--mlpbench-arch=subprocess,my-runner",
        "--mlpbench-rounds=1", "--mlpbench-warmup=0", "-v",
    )
    result.stdout.fnmatch_lines(["*test_workload[[]mine-subprocess[]] PASSED*", "*test_workload[[]mine-my-runner[]] PASSED*"])


def test_benchmarks_are_ordered_by_architecture(bench):
    bench.tests("def test_a(mlpbench):\n    mlpbench.run('linear')\n\ndef test_b(mlpbench):\n    mlpbench.run('linear')\n")
    result = bench.run("--mlpbench-arch=subprocess,inprocess", "--mlpbench-scale=smoke", "-v")
    result.stdout.fnmatch_lines(
        ["*test_a[[]subprocess[]] PASSED*", "*test_b[[]subprocess[]] PASSED*", "*test_a[[]inprocess[]] PASSED*",
         "*test_b[[]inprocess[]] PASSED*"]
    )


def test_an_architecture_can_decline_a_workload(bench):
    bench.tests(bench_source("fanout", "linear"))
    result = bench.run("--mlpbench-arch=no-fanout", "-rs")
    result.assert_outcomes(passed=1, skipped=1)
    result.stdout.fnmatch_lines(["*no-fanout: this architecture runs no fan-out*"])
    assert {r["workload"] for r in bench.runs()} == {"linear"}  # no record of the declined one
