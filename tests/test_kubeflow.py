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

SMOKE = ("--mlpbench-arch=kubeflow-local", "--mlpbench-rounds=1", "--mlpbench-scale=smoke")


def ir(workload, tmp_path) -> dict:
    return yaml.safe_load(compile_pipeline(build_pipeline(workload), tmp_path / "p.yaml").read_text())


def test_linear_fanout_and_failure_run_for_real(bench):
    bench.tests(TESTS)
    result = bench.run(*SMOKE)
    result.assert_outcomes(passed=2, failed=1)
    runs = {r["workload"]: r for r in bench.runs()}
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
