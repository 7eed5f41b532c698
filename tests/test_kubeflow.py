"""kubeflow-local runs for real (kfp.local's SubprocessRunner); the kubeflow
pipeline definition (IR YAML) is checked without a cluster."""
import json
import time

import pytest
import yaml
from conftest import bench_source
from fakes import FANOUT, LINEAR
from pytest_mlpbench.architectures import Unavailable
from pytest_mlpbench.architectures.kubeflow.local import KubeflowRemote
from pytest_mlpbench.architectures.kubeflow.pipeline import build_pipeline, compile_pipeline
from pytest_mlpbench.model.workload import RunSpec, Step, Workload, WorkloadError
from pytest_mlpbench.options import Settings
from pytest_mlpbench.step.params import to_param

TESTS = bench_source("linear", "fanout", "failing")

#: A module of the benchmarked project: a hand-off of ``bytes`` into a fan-out
#: whose tasks each hand a file on to the gather.
FANFILES = """
from pathlib import Path

from pytest_mlpbench import Step, Workload


def begin(ctx):
    blob = Path(ctx.artifacts) / "blob.bin"
    blob.write_bytes(b"x" * ctx.params["bytes"])
    return {"blob": str(blob), "parts": [1, 2]}


def part(ctx, item, blob):
    path = Path(ctx.artifacts) / "part.txt"
    path.write_text(str(item * Path(blob).stat().st_size))
    return {"part": str(path)}


def total(ctx, part):
    ctx.metric("total", sum(int(Path(p).read_text()) for p in part))
    return {}


FANFILES = Workload("fanfiles", "fanfiles:FANFILES", (
    Step("begin", begin), Step("part", part, needs=("begin",), foreach="parts"),
    Step("total", total, needs=("part",))), {s: {"bytes": 2**20} for s in ("smoke", "small", "full")},
    handoff="native")
"""

#: Native hand-off benchmarks, each checking that its files lie in the run's pipeline root as KFP artifacts.
NATIVE_TESTS = """
from fanfiles import FANFILES
from workloads import scaling


def artifacts(mlpbench, record):
    root = mlpbench.session.session_dir / "runs" / record.run_id / "kfp"
    return {str(p.relative_to(root)).split("/", 1)[1]: p.stat().st_size for p in root.rglob("*/artifacts/*")}


def test_handoff_native(mlpbench):
    [record] = mlpbench.run(scaling.handoff(2**20, "native"))
    assert artifacts(mlpbench, record) == {"write/artifacts/handoff.bin": 2**20}


def test_fanfiles(mlpbench):
    [record] = mlpbench.run(FANFILES)
    assert artifacts(mlpbench, record) == {"begin/artifacts/blob.bin": 2**20,
                                           "for-loop-1-iteration-0/part/artifacts/part.txt": 7,
                                           "for-loop-1-iteration-1/part/artifacts/part.txt": 7}
"""

SMOKE = ("--mlpbench-arch=kubeflow-local", "--mlpbench-rounds=1", "--mlpbench-scale=smoke")


def ir(workload, tmp_path) -> dict:
    return yaml.safe_load(compile_pipeline(build_pipeline(workload), tmp_path / "p.yaml").read_text())


def test_linear_fanout_failure_and_native_handoff_run_for_real(bench):
    bench.tests(TESTS + NATIVE_TESTS)
    bench.pytester.makepyfile(fanfiles=FANFILES)
    result = bench.run(*SMOKE)
    result.assert_outcomes(passed=4, failed=1)
    runs = {r["workload"]: r for r in bench.runs()}
    handoff, fanfiles = runs["handoff-native-1048576"], runs["fanfiles"]
    assert handoff["handoff"] == fanfiles["handoff"] == "native" and runs["linear"]["handoff"] == "shared"
    assert handoff["metrics"] == {"bytes_read": 2**20}
    assert fanfiles["metrics"] == {"total": 3 * 2**20}  # each part read begin's file, the total both parts'
    linear, fanout, failing = runs["linear"], runs["fanout"], runs["failing"]
    assert linear["outcome"] == fanout["outcome"] == "passed"
    assert [s["step"] for s in linear["steps"]] == ["begin", "middle", "end"]
    assert linear["metrics"] == {"value": 7.0}
    assert sorted((s["step"], s["index"]) for s in fanout["steps"]) == [
        ("begin", None), ("gather", None), ("shard", 0), ("shard", 1), ("shard", 2)]
    assert fanout["metrics"]["total"] == 14
    # every task ran in its own process, none in the test process
    assert len({s["pid"] for s in linear["steps"] + fanout["steps"]}) == 8
    assert linear["overhead_s"] > 0 and linear["compute_s"] >= 3 * 0.05
    assert failing["outcome"] == "failed"
    assert "step 'fail': RuntimeError: this step fails on purpose" in failing["error"]
    assert "\x1b[" not in failing["error"]


def test_timeout_kills_the_tasks_and_is_recorded(bench):
    bench.tests("def test_linear(mlpbench):\n    mlpbench.run('linear', sleep_s=100)\n")
    result = bench.run(*SMOKE, "--mlpbench-timeout=2")
    result.assert_outcomes(failed=1)
    (run,) = bench.runs()
    assert run["outcome"] == "timeout"
    assert "--mlpbench-timeout=2s" in run["error"]
    assert run["wall_s"] < 60  # the first step alone would sleep 100 s


def test_ir_has_one_component_per_step_and_the_dependencies(tmp_path):
    spec = ir(LINEAR, tmp_path)
    assert set(spec["components"]) == {"comp-begin", "comp-middle", "comp-end"}
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {"begin", "middle", "end"}
    assert tasks["middle"]["dependentTasks"] == ["begin"]
    assert sorted(tasks["end"]["dependentTasks"]) == ["begin", "middle"]
    assert set(spec["root"]["inputDefinitions"]["parameters"]) == {"spec", "env"}
    assert all(not t["cachingOptions"].get("enableCache") for t in tasks.values())


def test_ir_fans_out_in_a_parallel_for_and_collects(tmp_path):
    spec = ir(FANOUT, tmp_path)
    tasks = spec["root"]["dag"]["tasks"]
    loop = next(t for name, t in tasks.items() if name.startswith("for-loop"))
    assert loop["parameterIterator"]["items"]["inputParameter"] == "pipelinechannel--begin-Output"
    assert loop["dependentTasks"] == ["begin"]
    body = spec["components"][loop["componentRef"]["name"]]["dag"]["tasks"]
    assert list(body) == ["shard"]
    gather = tasks["gather"]["inputs"]["parameters"]["up_0"]["taskOutputParameter"]
    assert gather["producerTask"].startswith("for-loop")
    assert spec["components"]["comp-gather"]["inputDefinitions"]["parameters"]["up_0"]["parameterType"] == "LIST"


def test_ir_of_a_native_handoff_passes_each_task_its_producers_artifacts(tmp_path):
    spec = yaml.safe_load(compile_pipeline(build_pipeline(FANOUT, native=True), tmp_path / "p.yaml").read_text())
    components = spec["components"]
    for name in ("begin", "shard", "gather"):
        assert components[f"comp-{name}"]["outputDefinitions"]["artifacts"]["artifacts"]
    assert "in_0" not in components["comp-begin"]["inputDefinitions"].get("artifacts", {})
    assert not components["comp-shard"]["inputDefinitions"]["artifacts"]["in_0"].get("isArtifactList")
    assert components["comp-gather"]["inputDefinitions"]["artifacts"]["in_0"]["isArtifactList"]
    name, loop = next((n, t) for n, t in spec["root"]["dag"]["tasks"].items() if n.startswith("for-loop"))
    body = components[loop["componentRef"]["name"]]["dag"]["tasks"]["shard"]
    assert body["inputs"]["artifacts"]["in_0"]["componentInputArtifact"] == "pipelinechannel--begin-artifacts"
    gather = spec["root"]["dag"]["tasks"]["gather"]["inputs"]
    assert gather["artifacts"]["in_0"]["taskOutputArtifact"]["producerTask"] == name
    shared = ir(FANOUT, tmp_path)["components"]
    assert not any("artifacts" in c.get(d, {}) for c in shared.values() for d in ("inputDefinitions", "outputDefinitions"))


def test_tasks_install_nothing(tmp_path):
    text = (compile_pipeline(build_pipeline(FANOUT), tmp_path / "p.yaml")).read_text()
    assert "pip install" not in text and "venv" not in text
    executors = yaml.safe_load(text)["deploymentSpec"]["executors"]
    assert len(executors) == 3
    for executor in executors.values():
        assert "pytest_mlpbench.step.params" in executor["container"]["command"][-1]


def test_unsupported_fanouts_are_clear_errors():
    begin, shard = FANOUT.steps[0], FANOUT.steps[1]
    two_needs = Workload("two", "x:Y", (begin, Step("other", begin.fn), Step("shard", shard.fn,
                         needs=("begin", "other"), foreach="shards")), FANOUT.scales)
    with pytest.raises(WorkloadError, match="must need exactly one"):
        build_pipeline(two_needs)


def test_parameters_survive_kfp_local_rewriting_python3():
    value = {"path": "/usr/lib/python3.11/site-packages"}
    text = to_param(value)
    assert "python3" not in text and json.loads(text) == value


def test_remote_without_endpoint_says_what_to_set(monkeypatch):
    monkeypatch.delenv("KF_PIPELINES_ENDPOINT", raising=False)
    with pytest.raises(Unavailable, match="--mlpbench-kubeflow-host=URL.*--mlpbench-kubeflow-image"):
        KubeflowRemote(Settings({})).check()
    arch = KubeflowRemote(Settings({"kubeflow_host": "ftp://x", "kubeflow_image": "i", "kubeflow_artifacts": "/a"}))
    with pytest.raises(Unavailable, match="not an http"):
        arch.check()


def test_remote_with_an_endpoint_that_does_not_answer_is_unavailable_at_once(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    arch = KubeflowRemote(Settings({"kubeflow_host": f"http://127.0.0.1:{port}", "kubeflow_image": "i",
                                    "kubeflow_artifacts": "/a"}))
    arch.check()
    started = time.monotonic()
    with pytest.raises(Unavailable, match=f"KFP endpoint http://127.0.0.1:{port} does not answer"):
        arch.open(tmp_path)
    assert time.monotonic() - started < 5


def test_remote_task_times_come_from_the_run_details(tmp_path):
    from datetime import datetime, timedelta, timezone

    from kfp_server_api import V2beta1PipelineTaskDetail as Task, V2beta1Run, V2beta1RunDetails

    from pytest_mlpbench.architectures.base import Run
    from pytest_mlpbench.architectures.kubeflow.local import record_task_details

    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def task(name, offset, task_id):
        return Task(display_name=name, task_id=task_id, state="SUCCEEDED", create_time=t0 + timedelta(seconds=offset),
                    start_time=t0 + timedelta(seconds=offset + 1), end_time=t0 + timedelta(seconds=offset + 2))

    tasks = [task("mlpbench-fanout", 0, "root"), task("begin", 1, "b"), task("for-loop-1", 3, "loop"),
             task("shard", 5, "s1"), task("shard", 4, "s0"), task("gather", 8, "g")]
    run = Run(spec=RunSpec("fakes:FANOUT", "smoke", "r", str(tmp_path), str(tmp_path / "e")), workload=FANOUT,
              dir=tmp_path)
    record_task_details(V2beta1Run(state="SUCCEEDED", run_details=V2beta1RunDetails(task_details=tasks)), FANOUT, run)
    assert sorted(run.task_info, key=str) == [("begin", None), ("gather", None), ("shard", 0), ("shard", 1)]
    shard0 = run.task_info[("shard", 0)]
    assert shard0["kfp_task_id"] == "s0"
    assert shard0["started_ns"] - shard0["created_ns"] == 1_000_000_000
