"""kubeflow-docker and sagemaker-local run for real, one container per step, on
a Podman API service the session starts (or the user's Docker engine); the
engine, its containers and mounts are gone after the session; where no engine
can run, both are skipped with the reason."""
import json
import os
import shutil
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import REGISTER, TESTS, bench_source

from pytest_mlpbench.architectures import Unavailable
from pytest_mlpbench.architectures.containers.arch import container_times, timestamp_ns
from pytest_mlpbench.architectures.containers.engine import docker_unaccounted, mount_points, start_podman
from pytest_mlpbench.architectures.containers.image import code_tag, default_cache, package_files, workload_sources
from pytest_mlpbench.architectures.kubeflow.docker import ContainerStarter, KubeflowDocker
from pytest_mlpbench.architectures.sagemaker.local import SageMakerLocal, task_labels
from pytest_mlpbench.measure.cgroups import Cgroup, cgroup_mounts
from pytest_mlpbench.model.workload import SCALES, Step, Workload

ARCHS = "--mlpbench-arch=kubeflow-docker,sagemaker-local"
ENGINE_OPTIONS = ("--mlpbench-container-torch=no", f"--mlpbench-image-cache={default_cache()}", "-rs")
PODMAN = bool(shutil.which("podman") and shutil.which("runc") and os.geteuid() == 0)
needs_engine = pytest.mark.skipif(
    not (os.environ.get("DOCKER_HOST") or os.path.exists("/var/run/docker.sock") or PODMAN),
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


def our_cgroups() -> set[str]:
    """Every cgroup under /mlpbench, in every hierarchy."""
    return {root for point in set(cgroup_mounts().values()) for root, _, _ in os.walk(f"{point}/mlpbench")}


@needs_engine
def test_each_step_runs_in_its_own_container_is_counted_and_nothing_is_left(bench):
    """Containers run outside the test's process tree; their run's cgroup
    brings a known CPU time and a known allocation back into the record."""
    bench.tests("""
import pytest

def test_linear(mlpbench):
    mlpbench.run("linear")

def test_first(mlpbench):  # takes the workload's one-time costs (imports, pipeline definitions)
    mlpbench.run("cpu", busy_s=0)

@pytest.mark.parametrize("value", [0, 1])
def test_cpu(mlpbench, value):
    mlpbench.run("cpu", busy_s=3 * value)

@pytest.mark.parametrize("value", [0, 1])
def test_memory(mlpbench, value):
    mlpbench.run("memory", hold_mb=300 * value, hold_s=0.5)
""")
    mounts_before, cgroups_before = set(mount_points()), our_cgroups()
    procs_before = {p.pid for p in psutil.process_iter()}
    result = bench.run(ARCHS, "--mlpbench-rounds=1", "--mlpbench-scale=smoke", "--mlpbench-timeout=300",
                       *ENGINE_OPTIONS)
    result.assert_outcomes(passed=12)
    check_linear_runs({r["architecture"]: r for r in bench.runs() if r["workload"] == "linear"})
    medians = {(b["params"]["mlpbench_arch"], b["group"], b["params"]["value"]): b["extra_info"]["mlpbench"]["median"]
               for b in bench.benchmarks() if "value" in b["params"]}
    for arch in ("kubeflow-docker", "sagemaker-local"):
        cpu = [medians[(arch, "cpu", value)]["container_cpu_s"] for value in (0, 1)]
        assert cpu[1] - cpu[0] == pytest.approx(3.0, rel=0.05), arch
        assert cpu[0] > 0.1, "the container's Python start-up is counted"
        for value in (0, 1):  # the run's cpu_s is the test's process tree and the containers
            assert medians[(arch, "cpu", value)]["cpu_s"] > cpu[value] + 0.1, arch
        # the container's 300 MiB adds to the tree's memory; the tree's own peak varies by up to 15 MiB
        # between runs (measured), so 45 MiB is three times that
        peak = [medians[(arch, "memory", value)]["peak_rss_bytes"] for value in (0, 1)]
        assert peak[1] - peak[0] == pytest.approx(300 * 2**20, abs=45 * 2**20), arch
    versions = json.loads((bench.path / "bench.json").read_text())["machine_info"]["mlpbench"]["versions"]
    assert versions["container-accounting"] == "cgroup"
    assert not [m for m in set(mount_points()) - mounts_before if ours(m)]
    assert not engine_leftovers(procs_before)
    assert our_cgroups() <= cgroups_before, "the session's cgroups are removed"


def check_linear_runs(runs: dict) -> None:
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


#: A workload of a package that is not part of this project, nor on the test session's
#: PYTHONPATH: its conftest puts it on sys.path and registers it. The step says where its
#: module was imported from, and reads a data file of its package.
OUTSIDE_PACKAGE = """
import json
import os
from pathlib import Path

from pytest_mlpbench import Step, Workload


def cgroup_cores():  # of the container's cgroup cpuset, v1 or v2
    for path in ("/sys/fs/cgroup/cpuset/cpuset.cpus", "/sys/fs/cgroup/cpuset.cpus.effective"):
        if os.path.exists(path):
            ranges = [part.partition("-") for part in Path(path).read_text().strip().split(",")]
            return sum(int(last or first) - int(first) + 1 for first, _, last in ranges)
    return 0


def answer(ctx):
    ctx.metric("cgroup_cores", float(cgroup_cores()))
    ctx.metric("from_image", float(__file__.startswith("/opt/mlpbench/outside_work/")))
    ctx.metric("answer", json.loads((Path(__file__).parent / "answer.json").read_text())["answer"])
    return {}


WORKLOAD = Workload(name="outside", ref="outside_work:WORKLOAD", steps=(Step("answer", answer),),
                    scales={scale: {} for scale in ("smoke", "small", "full")})
"""


@needs_engine
def test_a_workload_from_outside_the_project_runs_in_its_containers_and_a_timeout_stops_them(bench, tmp_path_factory):
    """The workload's package is copied into the steps' image; the step in the
    container imports it from there (the host's paths are not in the container).
    The session runs pinned to one core, as a pytest-xdist worker does, and the
    containers' cgroups get that core as their cpuset. In the same session (one
    engine start for both), a step that sleeps 60 s is stopped at the 10 s limit."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    (elsewhere / "outside_work").mkdir()
    (elsewhere / "outside_work" / "__init__.py").write_text(OUTSIDE_PACKAGE)
    (elsewhere / "outside_work" / "answer.json").write_text('{"answer": 42}')
    bench.pytester.makeconftest(REGISTER + f"""

import sys

sys.path.insert(0, {str(elsewhere)!r})
from outside_work import WORKLOAD as OUTSIDE

_register_fakes = pytest_mlpbench_register


def pytest_mlpbench_register(registry):
    _register_fakes(registry)
    registry.add_workload(OUTSIDE)
""")
    bench.tests(bench_source("slow") + "\n\ndef test_outside(mlpbench):\n    mlpbench.run('outside')\n")
    procs_before = {p.pid for p in psutil.process_iter()}
    allowed = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {max(allowed)})  # the session pinned, as a pytest-xdist worker is
    try:
        result = bench.run(ARCHS, "--mlpbench-rounds=1", "--mlpbench-scale=smoke", "--mlpbench-timeout=10",
                           *ENGINE_OPTIONS)
    finally:
        os.sched_setaffinity(0, allowed)
    result.assert_outcomes(passed=2, failed=2)
    runs = bench.runs()
    outside = [r for r in runs if r["workload"] == "outside"]
    assert {r["architecture"] for r in outside} == {"kubeflow-docker", "sagemaker-local"}
    for run in outside:
        assert run["outcome"] == "passed", run.get("error")
        assert run["metrics"] == {"cgroup_cores": 1.0, "from_image": 1.0, "answer": 42.0}  # the container's cpuset
        assert [s["host"] for s in run["steps"]] == [s["container_id"] for s in run["steps"]]
    slow = [r for r in runs if r["workload"] != "outside"]
    assert {r["architecture"] for r in slow} == {"kubeflow-docker", "sagemaker-local"}
    assert all(r["outcome"] == "timeout" for r in slow), [r.get("error") for r in slow]
    assert all("--mlpbench-timeout=10s; stopped its containers" in r["error"] for r in slow)
    assert all(r["wall_s"] < 40 for r in slow), "the step sleeps 60 s: the limit cut it short"
    assert not engine_leftovers(procs_before)


def test_the_image_holds_the_installed_package_and_the_workloads_code(tmp_path, monkeypatch):
    """Layer 3 is the pytest_mlpbench package as imported here; layer 4 the top-level
    package (or module) of each workload's ref and steps, wherever it lives, and
    nothing of the standard library or of pytest-mlpbench again."""
    import pytest_mlpbench

    own = package_files()
    assert own["pytest_mlpbench/step/__init__.py"] == Path(pytest_mlpbench.__file__).parent / "step" / "__init__.py"
    assert all(dest.startswith("pytest_mlpbench/") and "__pycache__" not in dest for dest in own)
    assert not [p for p in own.values() if p.is_relative_to(TESTS)]

    (tmp_path / "outside_pkg" / "sub").mkdir(parents=True)
    (tmp_path / "outside_pkg" / "__init__.py").write_text("from pytest_mlpbench import Step, Workload\n")
    (tmp_path / "outside_pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "outside_pkg" / "sub" / "steps.py").write_text("def one(ctx):\n    return {}\n")
    (tmp_path / "outside_pkg" / "weights.bin").write_bytes(b"\0\1")
    (tmp_path / "space" / "leaf").mkdir(parents=True)  # a namespace package: only the part used is taken
    (tmp_path / "space" / "leaf" / "__init__.py").write_text("def two(ctx):\n    return {}\n")
    (tmp_path / "space" / "unrelated.py").write_text("")
    (tmp_path / "lonely.py").write_text("def three(ctx):\n    return {}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("outside_pkg", "space", "lonely"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import lonely

    workload = Workload(name="outside", ref="outside_pkg:WORKLOAD", scales={s: {} for s in SCALES}, steps=(
        Step("one", "outside_pkg.sub.steps:one"), Step("two", "space.leaf:two"), Step("three", lonely.three),
        Step("json", "json:dumps"), Step("own", "pytest_mlpbench.model.workload:load_workload")))
    files = workload_sources([workload])
    assert files == {"outside_pkg/__init__.py": tmp_path / "outside_pkg" / "__init__.py",
                     "outside_pkg/sub/__init__.py": tmp_path / "outside_pkg" / "sub" / "__init__.py",
                     "outside_pkg/sub/steps.py": tmp_path / "outside_pkg" / "sub" / "steps.py",
                     "outside_pkg/weights.bin": tmp_path / "outside_pkg" / "weights.bin",
                     "space/leaf/__init__.py": tmp_path / "space" / "leaf" / "__init__.py",
                     "lonely.py": tmp_path / "lonely.py"}

    from fakes import FANOUT, LINEAR  # the plugin's own test workloads are just another module

    assert workload_sources([LINEAR, FANOUT]) == {"fakes.py": TESTS / "fakes.py"}
    # the layer's tag covers every file it copies: a changed workload is a new image
    tag = code_tag("localhost/mlpbench-workloads", "localhost/mlpbench-steps:0", files)
    assert tag == code_tag("localhost/mlpbench-workloads", "localhost/mlpbench-steps:0", workload_sources([workload]))
    (tmp_path / "outside_pkg" / "weights.bin").write_bytes(b"\0\2")
    assert tag != code_tag("localhost/mlpbench-workloads", "localhost/mlpbench-steps:0", files)
    assert tag != code_tag("localhost/mlpbench-workloads", "localhost/mlpbench-steps:1", files)


def test_a_remote_docker_engine_is_not_counted_and_says_why():
    assert "another machine" in docker_unaccounted("tcp://build-host:2375")


@pytest.mark.skipif(not PODMAN, reason="needs Podman and runc as root")
def test_a_local_cgroupfs_engine_is_counted(tmp_path):
    engine = start_podman(tmp_path / "podman")  # answers the Docker API's info as Docker does
    try:
        assert docker_unaccounted(engine.url) is None
    finally:
        engine.close()


def test_cgroup_counters_are_read_from_v1_and_v2_files(tmp_path):
    (tmp_path / "v2" / "mlpbench" / "run").mkdir(parents=True)
    (tmp_path / "v2" / "mlpbench" / "run" / "cpu.stat").write_text("usage_usec 1500000\nuser_usec 1000000\n")
    (tmp_path / "v2" / "mlpbench" / "run" / "memory.current").write_text("4096\n")
    (tmp_path / "v2" / "mlpbench" / "run" / "memory.peak").write_text("8192\n")
    v2 = Cgroup("/mlpbench/run", {"unified": str(tmp_path / "v2")})
    assert (v2.cpu_s(), v2.memory_bytes(), v2.peak_bytes()) == (1.5, 4096, 8192)
    for controller, name, value in [("cpuacct", "cpuacct.usage", "2500000000"),
                                    ("memory", "memory.usage_in_bytes", "100"),
                                    ("memory", "memory.max_usage_in_bytes", "300")]:
        (tmp_path / controller / "mlpbench" / "run").mkdir(parents=True, exist_ok=True)
        (tmp_path / controller / "mlpbench" / "run" / name).write_text(value + "\n")
    v1 = Cgroup("mlpbench/run", {c: str(tmp_path / c) for c in ("cpuacct", "memory")})
    assert (v1.cpu_s(), v1.memory_bytes(), v1.peak_bytes()) == (2.5, 100, 300)
    assert Cgroup("mlpbench/not-yet", {c: str(tmp_path / c) for c in ("cpuacct", "memory")}).cpu_s() == 0


def test_no_engine_skips_both_quickly(bench):
    bench.tests(bench_source("linear"))
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
