"""``mlpbench history``: trend plots of every figure of every benchmark across
the saved runs, each point marked with the gates' verdict of its run against
the runs before it. The saved runs are copies of one real session's run, the
third one a doctored regression."""
import copy
import json
import os
import statistics
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import REGISTER, bench_source

from pytest_mlpbench.cli import main as mlpbench
from pytest_mlpbench.results import history

TESTS = Path(__file__).parent
PNG = b"\x89PNG\r\n\x1a\n"
GATES = ["--fail", "peak_rss_bytes:max:+50%", "--fail", "wall_s:median:+50%"]
DOCTORED = "peak_rss_bytes"


@pytest.fixture(scope="module")
def session_run(tmp_path_factory) -> dict:
    """The run one real session of the fake linear and fan-out workloads on ``inprocess`` saved (3 rounds each)."""
    root = tmp_path_factory.mktemp("session")
    (root / "conftest.py").write_text(REGISTER)
    (root / "test_bench.py").write_text(bench_source("linear", "fanout"))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--mlpbench-arch=inprocess",
         "--mlpbench-scale=smoke", "--mlpbench-rounds=3", "--mlpbench-warmup=0", "--benchmark-autosave",
         f"--benchmark-storage=file://{root / 'storage'}"],
        cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (saved,) = (root / "storage").glob("*/0001_*.json")
    return json.loads(saved.read_text())


def scaled(run: dict, factor: float, figure: str | None = None, benchmark: str = "") -> dict:
    """A copy of a saved run with every round's ``figure`` (default: every figure) times ``factor``,
    in the benchmarks whose name contains ``benchmark``."""
    run = copy.deepcopy(run)
    for bench in run["benchmarks"]:
        if benchmark not in bench["fullname"]:
            continue
        info = bench["extra_info"]["mlpbench"]
        for values in [*info["rounds"], info["median"]]:
            for key, value in values.items():
                if (figure in (None, key)) and isinstance(value, (int, float)) and key != "outcome":
                    values[key] = value * factor
    return run


def storage(root: Path, *runs: tuple[str, dict]) -> Path:
    """A file storage with the machine directory ``m`` holding ``runs`` (save name, saved run), a day apart."""
    machine = root / "storage" / "m"
    machine.mkdir(parents=True)
    for number, (name, run) in enumerate(runs, 1):
        (machine / f"{number:04d}_{name}.json").write_text(
            json.dumps({**run, "datetime": f"2025-03-0{number}T10:3{number}:00.000000+00:00"}))
    return root / "storage"


def figures(run: dict) -> set[tuple[str, str]]:
    """(benchmark, figure) of every figure a saved run recorded."""
    return {(b["fullname"], key) for b in run["benchmarks"] for r in b["extra_info"]["mlpbench"]["rounds"]
            for key, value in r.items() if isinstance(value, (int, float)) and key != "outcome"}


def valid_png(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data.startswith(PNG) and data[12:16] == b"IHDR" and data.endswith(b"IEND\xaeB`\x82"), path
    assert struct.unpack(">I", data[29:33])[0] == zlib.crc32(data[12:29]), path  # the header chunk is intact
    return struct.unpack(">II", data[16:24])


def run_history(monkeypatch, *args: str) -> tuple[int, dict[tuple[str, str], history.Plotted]]:
    """``mlpbench history ARGS`` in this process, and what each of its plots shows."""
    plotted = []
    plot = history.plot

    def spy(line, runs, directory):
        plotted.append(((line.benchmark, line.figure), plot(line, runs, directory)))
        return plotted[-1][1]

    monkeypatch.setattr(history, "plot", spy)
    return mlpbench(["history", *args]), dict(plotted)


def test_every_figure_is_plotted_and_the_doctored_regression_fails(session_run, tmp_path, monkeypatch, capsys):
    linear = next(b["fullname"] for b in session_run["benchmarks"] if "test_linear" in b["fullname"])
    root = storage(tmp_path, ("base", session_run), ("again", scaled(session_run, 0.98)),
                   ("doctored", scaled(session_run, 3, DOCTORED, "test_linear")))
    out = tmp_path / "results"
    code, plotted = run_history(monkeypatch, "--storage", str(root), "--machine", "m", "--history", "2",
                                *GATES, "-o", str(out))
    stdout = capsys.readouterr().out
    assert code == 1, stdout  # the latest saved run fails a gate
    assert f"FAILED gate peak_rss_bytes:max:+50%: {linear}: peak_rss_bytes max" in stdout

    expected = figures(session_run)
    assert len({b for b, _ in expected}) == 2 and {"wall_s", "peak_rss_bytes", "value", "total"} <= {
        f for _, f in expected}
    assert set(plotted) == expected
    folder = out / "history"
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(p.path.name for p in plotted.values())
    for (bench, figure), shown in plotted.items():
        assert shown.path.parent == folder and min(valid_png(shown.path)) > 100
        assert len(shown.labels) == len(shown.medians) == len(shown.spread) == len(shown.verdicts) == 3
        assert shown.labels[0] == "0001 base\n2025-03-01 10:31" and shown.labels[2].startswith("0003 doctored")
        assert all(low <= median <= high for median, (low, high) in zip(shown.medians, shown.spread))
        doctored = bench == linear and figure == DOCTORED
        assert shown.verdicts == ["no baseline", "passed", "failed" if doctored else "passed"], (bench, figure)

    # the plotted medians and spreads are the rounds', in the plot's unit (MiB for bytes)
    rounds = next(b for b in session_run["benchmarks"] if b["fullname"] == linear)["extra_info"]["mlpbench"]["rounds"]
    rss = [r[DOCTORED] / 2**20 for r in rounds]
    shown = plotted[(linear, DOCTORED)]
    assert shown.unit == "MiB"
    assert shown.medians == pytest.approx([statistics.median(rss) * f for f in (1, 0.98, 3)])
    assert shown.spread[2] == pytest.approx((min(rss) * 3, max(rss) * 3))
    wall = [r["wall_s"] for r in rounds]
    assert plotted[(linear, "wall_s")].medians == pytest.approx([statistics.median(wall) * f for f in (1, 0.98, 1)])

    text = (folder / "history.md").read_text()
    for shown in plotted.values():
        assert f"]({shown.path.name})" in text
    assert f"| 0003_doctored | 2025-03-03 10:33 | 2 | **failed**: {linear} peak_rss_bytes:max:+50% |" in text
    assert "| 0001_base | 2025-03-01 10:31 | 2 | no baseline |" in text and "| 0002_again |" in text
    assert "- 0003_doctored: peak_rss_bytes: peak_rss_bytes:max:+50% FAILED: " in text

    # the verdict of run 3 is mlpbench compare's
    assert mlpbench(["compare", "3", "--storage", str(root), "--machine", "m", "--history", "2", *GATES]) == 1
    assert f"FAILED gate peak_rss_bytes:max:+50%: {linear}" in capsys.readouterr().out


def test_one_saved_run_plots_one_point_without_baseline(session_run, tmp_path, monkeypatch, capsys):
    root = storage(tmp_path, ("only", session_run))
    stale = tmp_path / "results" / "history" / "gone--wall_s.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(PNG)  # a plot of a benchmark the history no longer has
    code, plotted = run_history(monkeypatch, "--storage", f"file://{root}", "--machine", "m",
                                "-o", str(tmp_path / "results"))
    assert code == 0, capsys.readouterr()
    assert set(plotted) == figures(session_run)
    assert all(p.verdicts == ["no baseline"] and len(p.medians) == 1 and p.path.is_file() for p in plotted.values())
    assert not stale.exists()
    assert "0001_only: no baseline" in capsys.readouterr().out


@pytest.mark.parametrize("layout, message", [
    ("none", "error: no saved runs in {root}/m (machine directories in {root}: none)"),
    ("empty", "error: no saved runs in {root}/m (machine directories in {root}: m)"),
    ("foreign", "error: nothing to plot: none of the 1 saved run(s) in {root}/m has a benchmark mlpbench measured"),
])
def test_no_saved_runs_is_a_clear_usage_error(tmp_path, capsys, layout, message):
    root = tmp_path / "storage"
    if layout != "none":
        (root / "m").mkdir(parents=True)
    if layout == "foreign":  # pytest-benchmark's own benchmarks only
        (root / "m" / "0001_plain.json").write_text(json.dumps({"benchmarks": [{"fullname": "t.py::t", "stats": {}}]}))
    assert mlpbench(["history", "--storage", str(root), "--machine", "m", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message.format(root=root) in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_gates_and_missing_matplotlib_are_usage_errors(tmp_path, capsys, monkeypatch):
    root = storage(tmp_path, ("one", {"benchmarks": [
        {"fullname": "t.py::t", "extra_info": {"mlpbench": {"rounds": [{"outcome": "passed", "wall_s": 1.0}]}}}]}))
    args = ["history", "--storage", str(root), "--machine", "m", "-o", str(tmp_path / "out")]
    assert mlpbench([*args, "--fail", "wall_s:avg:+1%"]) == 2
    assert "error: --fail: STAT 'avg' is not one of min, median, mean, max" in capsys.readouterr().err
    assert mlpbench([*args, "--fail", "wal_s:median:+1%"]) == 2
    assert "error: --fail wal_s:median:+1%: no saved run records wal_s; recorded figures: wall_s" \
        in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    assert mlpbench(args) == 2
    err = capsys.readouterr().err
    assert "error: mlpbench history draws its plots with matplotlib" in err and "pip install matplotlib" in err
    assert not (tmp_path / "out").exists()
