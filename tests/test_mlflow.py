"""The mlflow architecture (MLflow Projects) and --mlpbench-mlflow-uri (results
in MLflow), against a real SQLite store and a real tracking server."""
import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from importlib.util import find_spec
from pathlib import Path

import psutil
import pytest
from fakes import FAILING, FANOUT, LINEAR

from pytest_mlpbench.architectures import RunFailed, RunTimeout
from pytest_mlpbench.architectures.base import Run, kill_group
from pytest_mlpbench.architectures.mlflow_projects import MlflowProjects  # imports no mlflow until used
from pytest_mlpbench.model.workload import RunSpec, Step, Workload
from pytest_mlpbench.sinks.mlflow import import_mlflow, parse_tracking_uri
from workloads import scaling

pytestmark = [
    pytest.mark.skipif(find_spec("mlflow") is None, reason="mlflow is not installed"),
    pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning"),  # MLflow's own store
]

MLFLOW = Path(sys.executable).parent / "mlflow"

def make_run(tmp_path, workload, timeout_s=None, **params):
    run_dir = tmp_path / "run"
    (run_dir / "artifacts").mkdir(parents=True)
    spec = RunSpec(workload=workload.ref, scale="smoke", run_id=uuid.uuid4().hex, artifacts=str(run_dir / "artifacts"),
                   events=str(run_dir / "events.jsonl"), params=params)
    return Run(spec=spec, workload=workload, dir=run_dir, timeout_s=timeout_s)


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    """One architecture for the module: a new SQLite store costs seconds to create."""
    arch = MlflowProjects()
    arch.check()
    arch.open(tmp_path_factory.mktemp("session"))
    yield arch
    arch.close()


def test_steps_are_nested_project_runs_and_the_tracking_uri_does_not_leak(arch, tmp_path):
    mlflow = import_mlflow()
    env_before, uri_before = dict(os.environ), mlflow.get_tracking_uri()
    run = make_run(tmp_path, LINEAR)
    arch.run(LINEAR, run)
    assert dict(os.environ) == env_before
    assert mlflow.get_tracking_uri() == uri_before != arch.uri
    assert mlflow.active_run() is None

    client = mlflow.MlflowClient(arch.uri)
    (parent,) = client.search_runs([arch.experiments["linear"]], f"tags.`mlpbench.run_id` = '{run.spec.run_id}'")
    children = client.search_runs([arch.experiments["linear"]], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(r.data.params["step"] for r in children) == ["begin", "end", "middle"]
    assert {r.info.status for r in [parent, *children]} == {"FINISHED"}
    events = [json.loads(line) for line in Path(run.spec.events).read_text().splitlines()]
    assert [e["step"] for e in events] == ["begin", "middle", "end"]
    assert {(step, index) for step, index in run.task_info} == {("begin", None), ("middle", None), ("end", None)}
    for info in run.task_info.values():  # MLflow created the run before the step process started
        assert info["created_ns"] < info["finished_ns"]


def test_timeout_kills_the_running_step(arch, tmp_path):
    run = make_run(tmp_path, LINEAR, sleep_s=60, timeout_s=4)
    started = time.monotonic()
    with pytest.raises(RunTimeout):
        arch.run(LINEAR, run)
    assert time.monotonic() - started < 20
    spec = str(run.dir / "spec.json")
    leftovers = [p for p in psutil.Process().children(recursive=True) if spec in " ".join(p.cmdline())]
    assert not leftovers


def test_fan_out_tasks_are_mlflow_runs_of_their_own(arch, tmp_path):
    run = make_run(tmp_path, FANOUT)
    arch.run(FANOUT, run)
    events = {(e["step"], e["index"]): e for e in map(json.loads, Path(run.spec.events).read_text().splitlines())}
    assert sorted(events, key=str) == sorted([("begin", None), ("shard", 0), ("shard", 1), ("shard", 2),
                                              ("gather", None)], key=str)
    assert events[("gather", None)]["metrics"] == {"total": 14.0}
    assert len({events[("shard", i)]["pid"] for i in range(3)}) == 3
    shard_runs = {run.task_info[("shard", i)]["mlflow_run_id"] for i in range(3)}
    client = import_mlflow().MlflowClient(arch.uri)
    for run_id in shard_runs:  # each task its own MLflow run, nested under the benchmark run's
        logged = client.get_run(run_id)
        assert logged.info.status == "FINISHED" and logged.data.tags["mlflow.parentRunId"]


def fan_begin(ctx) -> dict:
    blob = Path(ctx.artifacts) / "blob.bin"
    blob.write_bytes(os.urandom(ctx.params["bytes"]))
    return {"blob": str(blob), "parts": [1, 2]}


def fan_part(ctx, item, blob) -> dict:
    part = Path(ctx.artifacts) / "part.txt"
    part.write_text(str(item * Path(blob).stat().st_size))
    return {"part": str(part)}


def fan_sum(ctx, part) -> dict:
    ctx.metric("total", sum(int(Path(p).read_text()) for p in part))
    return {}


#: A hand-off of ``bytes`` into a fan-out whose tasks each hand a file on to the gather.
FANFILES = Workload("fanfiles", "test_mlflow:FANFILES", (
    Step("begin", fan_begin), Step("part", fan_part, needs=("begin",), foreach="parts"),
    Step("sum", fan_sum, needs=("part",))), {s: {"bytes": 2**20} for s in ("smoke", "small", "full")},
    handoff="native")


def test_native_handoff_carries_files_through_the_artifact_store_into_and_out_of_a_fan_out(arch, tmp_path):
    assert arch.handoff(FANFILES) == arch.handoff_used("native") == "native"
    assert arch.handoff(scaling.handoff(2**20, "native")) == "native"
    run = make_run(tmp_path, FANFILES)
    run.spec.handoff = "native"
    arch.run(FANFILES, run)
    events = {(e["step"], e["index"]): e for e in map(json.loads, Path(run.spec.events).read_text().splitlines())}
    assert events[("sum", None)]["metrics"] == {"total": 3.0 * 2**20}
    store = arch.dir / "mlartifacts" / "fanfiles"
    begin = store / run.task_info[("begin", None)]["mlflow_run_id"] / "artifacts" / "begin" / "blob.bin"
    assert begin.stat().st_size == 2**20  # logged to the begin task's MLflow run, under its key
    for i in range(2):  # each part task downloaded it, and logged its own file for the gather
        assert (run.dir / "carried" / f"part.{i}" / "begin" / "blob.bin").read_bytes() == begin.read_bytes()
        part = store / run.task_info[("part", i)]["mlflow_run_id"] / "artifacts" / f"part.{i}" / "part.txt"
        assert part.read_text() == (run.dir / "carried" / "sum" / f"part.{i}" / "part.txt").read_text()


def test_a_failed_download_is_the_runs_error(arch, tmp_path, monkeypatch):  # arch: MLflow imported, telemetry off
    from pytest_mlpbench.architectures.mlflow_projects import Driver
    from pytest_mlpbench.architectures.mlflow_step import main

    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # main() sets it where unset
    run = make_run(tmp_path, FANFILES)
    run.spec.handoff = "native"
    driver = Driver(run, tmp_path)
    driver.fetch = {"begin": (tmp_path / "nowhere" / "begin").as_uri()}
    plan = driver.plan("part", 1)
    assert main(["--handoff", str(plan), "--spec", "{}", "--step", "part", "--outputs", "x"]) == 1
    assert re.match(r"step 'part\[1\]': native hand-off: downloading the artifacts of \['begin'\] from MLflow failed: "
                    ".*No such artifact", driver.handoff_error("part", 1), re.S)
    assert driver.handoff_error("part", 0) is None


def test_a_failing_step_fails_the_run_with_its_error(arch, tmp_path):
    with pytest.raises(RunFailed, match="step 'fail'.*this step fails on purpose"):
        arch.run(FAILING, make_run(tmp_path, FAILING))
    mlflow = import_mlflow()
    runs = mlflow.MlflowClient(arch.uri).search_runs([arch.experiments["failing"]])
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED", "FINISHED"]  # parent, fail, begin


# -- results in MLflow --


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real MLflow tracking server on 127.0.0.1, stopped after the module."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "art")]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(root / "server.log", "wb") as log:
        server = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # minutes on a loaded 2-core machine
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        yield uri
    finally:
        kill_group(server)


def logged_runs(uri: str, workload: str = "linear"):
    client = import_mlflow().MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"mlpbench-{workload}")
    return client, client.search_runs([experiment.experiment_id])


def check_logged(bench, uri: str) -> None:
    """Every measured round is an MLflow run whose metrics equal the figures in
    the pytest-benchmark JSON, with its step table and versions."""
    client, runs = logged_runs(uri)
    by_id = {r.data.tags["mlpbench.run_id"]: r for r in runs}
    benchmarks = bench.benchmarks()
    versions = json.loads((bench.path / "bench.json").read_text())["machine_info"]["mlpbench"]["versions"]
    expected = [(b["extra_info"]["mlpbench"]["architecture"], b, r) for b in benchmarks
                for r in b["extra_info"]["mlpbench"]["rounds"]]
    assert len(expected) == 4 and set(by_id) == {r["run_id"] for _, _, r in expected}
    for arch, benchmark, round_ in expected:
        logged = by_id[round_["run_id"]]
        assert logged.data.tags["mlpbench.architecture"] == arch
        assert logged.info.status == "FINISHED"
        figures = {k: v for k, v in round_.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        assert figures and {k: logged.data.metrics[k] for k in figures} == pytest.approx(figures, rel=1e-12)
        assert logged.data.metrics["gap_s.begin.middle"] == pytest.approx(round_["gaps"]["begin->middle"])
        assert logged.data.tags["version.pytest-benchmark"] == versions["pytest-benchmark"]
        artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
        assert {"steps.csv", "steps.json"} <= artifacts
        steps = json.loads(Path(client.download_artifacts(logged.info.run_id, "steps.json", str(bench.path))).read_text())
        assert steps == round_["steps"]


def test_mlflow_runs_twice_and_results_land_in_a_sqlite_store(bench):
    bench.tests()
    uri = f"sqlite:///{bench.path / 'results.db'}"
    result = bench.run("--mlpbench-arch=mlflow,subprocess", "--mlpbench-rounds=2", "--mlpbench-scale=smoke",
                       f"--mlpbench-mlflow-uri={uri}")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines([f"*mlpbench: logged 4 runs to MLflow at {uri}*"])
    check_logged(bench, uri)
    assert not (bench.path / "mlruns").exists(), "artifacts went next to the database, not into the cwd"


@pytest.mark.slow  # an MLflow server takes tens of seconds to start on a small machine
def test_results_land_on_a_tracking_server(bench, mlflow_server):
    bench.tests()
    result = bench.run("--mlpbench-arch=inprocess,subprocess", "--mlpbench-rounds=2", "--mlpbench-scale=smoke",
                       f"--mlpbench-mlflow-uri={mlflow_server}")
    result.assert_outcomes(passed=2)
    check_logged(bench, mlflow_server)


@pytest.mark.parametrize("uri, message", [
    ("ftp://host/x", "expected an http(s)://, sqlite:/// or file: URI, or a directory"),
    ("sqlite:////no/such/dir/m.db", "no such directory: /no/such/dir"),
    ("sqlite:///", "expected sqlite:///PATH/TO/mlflow.db"),
    ("http://", "expected http://HOST:PORT"),
])
def test_bad_uris_are_refused(uri, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_tracking_uri(uri)


def test_good_uris_are_made_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_tracking_uri("sqlite:///m.db") == f"sqlite:///{tmp_path}/m.db"
    assert parse_tracking_uri("http://127.0.0.1:5000/") == "http://127.0.0.1:5000"
    assert parse_tracking_uri("runs") == (tmp_path / "runs").as_uri()


def test_an_unreachable_server_is_a_usage_error(bench):
    bench.tests()
    uri = f"http://127.0.0.1:{free_port()}"
    result = bench.run(f"--mlpbench-mlflow-uri={uri}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*--mlpbench-mlflow-uri={uri}: no MLflow tracking server answers there*"])
