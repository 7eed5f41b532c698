"""kubeflow-docker and sagemaker-local run for real, one container per step, on
a Podman API service the session starts (or the user's Docker engine); the
engine, its containers and mounts are gone after the session; where no engine
can run, both are skipped with the reason."""
import json
import os
import shutil
import time

import psutil
import pytest

from pytest_mlpbench.architectures import Unavailable
from pytest_mlpbench.architectures.kubeflow_docker import ContainerStarter, KubeflowDocker
from pytest_mlpbench.architectures.sagemaker_local import SageMakerLocal, task_labels
from pytest_mlpbench.containers.arch import container_times, timestamp_ns
from pytest_mlpbench.containers.engine import mount_points
from pytest_mlpbench.containers.image import default_cache

ARCHS = "--mlpbench-arch=kubeflow-docker,sagemaker-local"
needs_engine = pytest.mark.skipif(
    not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock")
         or (shutil.which("podman") and shutil.which("runc") and os.geteuid() == 0)),
    reason="no container engine here (Docker, or Podman + runc as root)")


def ours(text: str) -> bool:
    return "mlpb-" in text or "mlpbench-" in text or "/mlpbench/store" in text


def engine_leftovers(before: set[int]) -> list[str]:
    procs = []
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if proc.info["pid"] not in before and proc.info["name"] in ("podman", "conmon", "runc") and ours(cmd):
            procs.append(cmd)
    return procs


@needs_engine
def test_each_step_runs_in_its_own_container_and_nothing_is_left(bench):
    bench.tests("def test_linear(mlpbench):\n    mlpbench.run('linear')\n")
    mounts_before = set(mount_points())
    procs_before = {p.pid for p in psutil.process_iter()}
    result = bench.run(ARCHS, "--mlpbench-rounds=1", "--mlpbench-scale=smoke", "--mlpbench-timeout=300",
                       "--mlpbench-container-torch=no", f"--mlpbench-image-cache={default_cache()}", "-rs")
    result.assert_outcomes(passed=2)
    runs = {r["architecture"]: r for r in bench.runs()}
    assert set(runs) == {"kubeflow-docker", "sagemaker-local"}
    for arch, run in runs.items():
        assert run["outcome"] == "passed", run.get("error")
        assert [s["step"] for s in run["steps"]] == ["begin", "middle", "end"]
        assert run["metrics"] == {"value": 7.0}
        ids = {s["container_id"] for s in run["steps"]}
        assert len(ids) == 3, f"{arch}: one container per step"
        for step in run["steps"]:
            assert step["host"] == step["container_id"], "the step ran inside its container"
            assert 0 < step["container_startup_s"] < 60
            assert 0 < step["launch_delay_s"] < 60  # container start -> step code start
        assert run["overhead_s"] > sum(s["container_startup_s"] for s in run["steps"])
    assert all(s["queue_delay_s"] > 0 for s in runs["sagemaker-local"]["steps"])  # step start -> container start
    assert not [m for m in set(mount_points()) - mounts_before if ours(m)]
    assert not engine_leftovers(procs_before)


def test_no_engine_skips_both_quickly(bench):
    bench.tests("def test_linear(mlpbench):\n    mlpbench.run('linear')\n")
    started = time.monotonic()
    result = bench.run(ARCHS, "--mlpbench-container-engine=docker", "--mlpbench-docker-host=unix:///nonexistent.sock",
                       "-rs")
    assert time.monotonic() - started < 60
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*kubeflow-docker: no Docker engine answers at unix:///nonexistent.sock*",
                                 "*sagemaker-local: no Docker engine answers*"])


@pytest.mark.parametrize("arch", [KubeflowDocker, SageMakerLocal])
def test_without_docker_or_podman_check_says_what_to_install(arch, monkeypatch, tmp_path):
    from pytest_mlpbench.options import Settings

    monkeypatch.setenv("PATH", str(tmp_path))  # no podman, no runc, no docker-compose
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/none.sock")
    with pytest.raises(Unavailable, match="apt-get install podman runc"):
        arch(Settings({"container_engine": "auto"})).check()


def test_engine_timestamps_keep_nanoseconds():
    assert timestamp_ns("2026-11-22T06:54:40.123456789Z") == 1795330480123456789
    assert timestamp_ns("2026-11-22T06:54:40.5+00:00") == 1795330480500000000
    assert timestamp_ns("2026-11-22T07:54:40.000000001+01:00") == 1795330480000000001
    assert timestamp_ns("0001-01-01T00:00:00Z") is None
    info = container_times({"Id": "abcdef0123456789", "Created": "2026-11-22T06:54:40.1Z",
                            "State": {"StartedAt": "2026-11-22T06:54:40.4Z", "FinishedAt": "2026-11-22T06:54:41.4Z",
                                      "ExitCode": 0}})
    assert info["container_startup_s"] == pytest.approx(0.3)
    assert info["container_run_s"] == pytest.approx(1.0)
    assert info["container_id"] == "abcdef012345"


def test_tasks_are_named_from_their_commands():
    from fakes import FANOUT

    starter = ContainerStarter(None, FANOUT, None)
    item = json.dumps({"index": 2, "outputs": "{}"})
    command = ["sh", "-c", "...", "--executor_input",
               json.dumps({"inputs": {"parameterValues": {"item": item}}}), "--function_to_execute", "shard"]
    assert starter.task_of(command) == ("shard", 2)
    assert starter.task_of(["--function_to_execute", "begin", "--executor_input", "{}"]) == ("begin", None)
    assert task_labels(["--step", "train", "--spec", "{}", "--index", 3]) == {
        "mlpbench.step": "train", "mlpbench.index": "3"}
