"""The comparison report (results/report.md and plots), its command, and the progress line."""
import subprocess
import sys

import pytest
from conftest import bench_source

from pytest_mlpbench.results import report as comparison

PNG = b"\x89PNG\r\n\x1a\n"

TESTS = bench_source("linear", "fanout")


def report_table(text: str, workload: str) -> dict[str, list[str]]:
    """The first table of a workload's section: architecture -> cells."""
    section = text.split(f"## {workload}", 1)[1]
    rows = [line.strip("|").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    headers = [h.strip() for h in rows[0]]
    table = {}
    for row in rows[1:]:
        if row[0].strip() == "architecture":
            break
        table[row[0].strip()] = dict(zip(headers, (c.strip() for c in row)))
    return table


@pytest.fixture
def sessions(bench):
    """Two saved sessions of the fake workloads on ``inprocess`` and of the
    linear one on ``sleepy`` too (it sleeps 0.15 s before each of its three
    steps): the second session under -q."""
    bench.tests(TESTS)
    select = ("--mlpbench-arch=inprocess,sleepy", "-k", "linear or inprocess", "--mlpbench-scale=smoke")
    first = bench.run(*select, "--mlpbench-rounds=2")
    first.assert_outcomes(passed=3, deselected=1)
    (bench.path / "bench.json").rename(bench.path / "first.json")
    second = bench.run(*select, "--mlpbench-rounds=1", "-q", "--mlpbench-results=second")
    second.assert_outcomes(passed=3, deselected=1)
    return bench, first, second


def test_session_report_progress_and_rebuild(sessions):
    bench, first, second = sessions
    # the progress line: one per round, with architecture, workload, round and elapsed time; off under -q
    first.stdout.fnmatch_lines(["mlpbench: inprocess / linear round 1/2 passed in *s (elapsed *s)",
                                "mlpbench: sleepy / linear round 2/2 passed in *s (elapsed *s)"])
    assert "mlpbench: " not in second.stdout.str().replace("mlpbench: medians", "")

    results = bench.path / "results"
    report = (results / "report.md").read_text()
    for workload in ("linear", "fanout"):
        for kind in ("time", "resources", "timeline"):
            image = results / f"{workload}-{kind}.png"
            assert image.read_bytes().startswith(PNG) and image.stat().st_size > 10_000
            assert f"]({workload}-{kind}.png)" in report
    assert list(report_table(report, "fanout")) == ["inprocess"]
    table = report_table(report, "linear")
    assert list(table) == ["inprocess", "sleepy"]
    assert table["inprocess"]["runs"] == "2" and table["inprocess"]["failed"] == "0"
    # sleepy's known cost: 0.15 s before the first step (startup), 3 x 0.15 s in all (overhead)
    assert 0.15 <= float(table["sleepy"]["startup (s)"]) < 0.3
    # over inprocess subtracts the floor's own overhead, a few ms that sleepy's run need not have (0.449 seen)
    assert 0.44 <= float(table["sleepy"]["over inprocess (s)"]) < 0.7
    assert "| value |" in report and "| total |" in report  # the workloads' own figures

    # rebuilt from saved files, two sessions side by side, labelled by file
    out = bench.path / "rebuilt"
    done = subprocess.run([sys.executable, "-m", "pytest_mlpbench", "report", "first.json", "second/runs.jsonl",
                           "-o", str(out)], cwd=bench.path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wrote {out / 'report.md'}"
    rebuilt = report_table((out / "report.md").read_text(), "linear")
    assert list(rebuilt) == ["inprocess (first)", "inprocess (second)", "sleepy (first)", "sleepy (second)"]
    assert [row["runs"] for row in rebuilt.values()] == ["2", "1", "2", "1"]
    assert (out / "linear-timeline.png").read_bytes().startswith(PNG)

    # both kinds of saved file carry the same runs
    from_json = comparison.load(bench.path / "first.json")
    from_jsonl = [r for r in comparison.load(bench.path / "results") if not r["warmup"]]  # a results directory
    key = lambda r: r["run_id"]
    assert sorted(from_json, key=key) == sorted(({**r, "source": "first"} for r in from_jsonl), key=key)


def test_report_without_matplotlib(bench, tmp_path):
    bench.tests()
    bench.run("--mlpbench-arch=inprocess,sleepy", "--mlpbench-rounds=1", "--mlpbench-scale=smoke", "-q")
    runs = bench.path / "results" / "runs.jsonl"
    code = (  # a fresh interpreter: matplotlib may already be imported in this one
        "import sys, pathlib\n"
        "sys.modules['matplotlib'] = None\n"
        "from pytest_mlpbench.results import report as comparison\n"
        f"comparison.write_report(comparison.load(pathlib.Path({str(runs)!r})), pathlib.Path({str(tmp_path)!r}))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    text = (tmp_path / "report.md").read_text()
    assert "No plots: matplotlib is not installed (pip install matplotlib)." in text
    assert "| sleepy |" in text and not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("name, content, message, code", [
    ("missing.json", None, "error: *missing.json: cannot read: No such file or directory", 2),
    ("bad.json", "not json", "error: *bad.json: not mlpbench results: Expecting value*", 2),
    ("bad.json", '{"machine_info": {}}', "error: *bad.json: not a pytest-benchmark JSON file (no 'benchmarks' list)", 2),
    ("bad.json", '{"benchmarks": [{"extra_info": {}}]}', "error: no measured mlpbench runs in bad.json", 1),
    ("runs.jsonl", '{"torn": ', "error: no measured mlpbench runs in runs.jsonl", 1),
])
def test_report_command_errors(pytester, name, content, message, code):
    if content is not None:
        (pytester.path / name).write_text(content)
    result = pytester.run(sys.executable, "-m", "pytest_mlpbench", "report", name)
    assert result.ret == code
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()
