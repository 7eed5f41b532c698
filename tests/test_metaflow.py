"""The Metaflow architectures: generated flows, real local runs, remote command
lines and skip reasons. The local runs use Metaflow's real runtime."""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytest.importorskip("metaflow")

from conftest import bench_source  # noqa: E402
from fakes import FANOUT, LINEAR, SCALES, begin, gather, shard  # noqa: E402

from pytest_mlpbench import Step, Workload  # noqa: E402
from pytest_mlpbench.architectures import Unavailable  # noqa: E402
from pytest_mlpbench.architectures.metaflow import MetaflowBatch, MetaflowKubernetes, MetaflowLocal  # noqa: E402
from pytest_mlpbench.architectures.metaflow.flowgen import flow_class_name, flow_source, plan  # noqa: E402
from pytest_mlpbench.options import Settings  # noqa: E402

TESTS = Path(__file__).parent

#: A join that would open the next fan-out, a fan-out at the end, and step names
#: Metaflow reserves: the shapes that need added split, join and end steps.
TWICE = Workload(
    name="twice-fanned",
    ref="test_metaflow:TWICE",
    steps=(
        Step("start", begin),
        Step("shard", shard, needs=("start",), foreach="shards"),
        Step("gather", gather, needs=("shard",)),
        Step("name", shard, needs=("start",), foreach="shards"),
    ),
    scales=SCALES,
)

#: A fan-out straight after a fan-out.
BACK_TO_BACK = Workload(
    name="back-to-back",
    ref="test_metaflow:BACK_TO_BACK",
    steps=(
        Step("begin", begin),
        Step("shard", shard, needs=("begin",), foreach="shards"),
        Step("again", shard, needs=("shard", "begin"), foreach="square"),
        Step("gather", gather, needs=("again",)),
    ),
    scales=SCALES,
)


def test_plan_keeps_the_workload_steps_and_adds_only_what_metaflow_needs():
    assert [(n.name, n.step, n.join, n.foreach) for n in plan(LINEAR)] == [
        ("begin", "begin", None, False), ("middle", "middle", None, False), ("end", "end", None, False)]
    assert [(n.name, n.step, n.join, n.foreach) for n in plan(FANOUT)] == [
        ("begin", "begin", None, False), ("shard", "shard", None, True),
        ("gather", "gather", "shard", False), ("end", None, None, False)]
    assert [(n.name, n.step, n.join) for n in plan(TWICE)] == [
        ("start", "start", None), ("shard", "shard", None), ("gather", "gather", "shard"),
        ("split_name", None, None), ("step_name", "name", None), ("join_name", None, "name"), ("end", None, None)]
    assert [(n.name, n.step, n.join) for n in plan(BACK_TO_BACK)] == [
        ("begin", "begin", None), ("shard", "shard", None), ("join_shard", None, "shard"),
        ("split_again", None, None), ("again", "again", None), ("gather", "gather", "again"), ("end", None, None)]


@pytest.mark.parametrize("workload", [LINEAR, FANOUT, TWICE, BACK_TO_BACK], ids=lambda w: w.name)
def test_generated_flow_passes_metaflows_own_graph_checks(workload, tmp_path, monkeypatch):
    from metaflow.graph import FlowGraph
    from metaflow.lint import linter

    source = flow_source(workload, ship_files=workload is TWICE)
    module_name = f"flow_of_{workload.name.replace('-', '_')}"
    (tmp_path / f"{module_name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = __import__(module_name)
    graph = FlowGraph(getattr(module, flow_class_name(workload)))
    linter.run_checks(graph)  # raises LintWarn on any shape Metaflow rejects
    assert graph.start_step == plan(workload)[0].name and graph.end_step == "end"
    assert ('foreach="mlpb_items"' in source) == any(s.foreach for s in workload.steps)


def test_local_command_line(tmp_path):
    arch = MetaflowLocal(Settings({"metaflow_max_workers": 3}))
    arch.open(tmp_path)
    cmd = arch.command(tmp_path / "flow.py", '{"x": 1}', tmp_path / "id")
    assert cmd[:6] == [sys.executable, str(tmp_path / "flow.py"), "--no-pylint", "--metadata=local",
                       "--environment=local", "--datastore=local"]
    assert cmd[6:] == ["run", "--run-id-file", str(tmp_path / "id"), "--max-workers", "3", "--mlpb_spec", '{"x": 1}']
    env = arch.environment()
    assert env["METAFLOW_HOME"] == str(tmp_path / "home") and env["METAFLOW_USER"] == "mlpbench"
    assert env["METAFLOW_DATASTORE_SYSROOT_LOCAL"] == str(tmp_path / "store")
    assert "--max-workers" not in MetaflowLocal(Settings({})).command(tmp_path / "f.py", "{}", tmp_path / "id")


@pytest.fixture
def bare_env(tmp_path, monkeypatch):
    """No AWS, Kubernetes or Metaflow configuration from this machine, and
    no network: a connection attempt is recorded and refused."""
    dialled = []

    def refuse(sock, address, *args):
        dialled.append(address)
        raise OSError("tests: no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    for name in list(os.environ):
        if name.startswith(("AWS_", "METAFLOW_", "KUBE")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    yield monkeypatch
    assert dialled == [], "check() must not dial anything"


def unavailable(arch) -> str:
    with pytest.raises(Unavailable) as info:
        arch.check()
    return str(info.value)


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://192.0.2.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: lab, context: {cluster: c, user: u}}, {name: prod, context: {cluster: c, user: u}}]
current-context: lab
"""


def test_kubernetes_skip_reasons_say_what_to_set(bare_env, tmp_path):
    def arch(**options):
        return MetaflowKubernetes(Settings(options))

    assert "--mlpbench-metaflow-s3-root=s3://BUCKET/PREFIX or METAFLOW_DATASTORE_SYSROOT_S3" in unavailable(arch())
    assert "must look like s3://" in unavailable(arch(metaflow_s3_root="/local/dir"))
    assert "--mlpbench-metaflow-image=IMAGE or METAFLOW_KUBERNETES_CONTAINER_IMAGE" in unavailable(
        arch(metaflow_s3_root="s3://b/p"))
    bare_env.setenv("METAFLOW_DATASTORE_SYSROOT_S3", "s3://b/p")  # Metaflow's own configuration counts
    bare_env.setenv("METAFLOW_KUBERNETES_CONTAINER_IMAGE", "img")
    assert "no kubeconfig" in unavailable(arch()) and "set KUBECONFIG" in unavailable(arch())
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    bare_env.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    assert "no context 'dev'" in unavailable(arch(metaflow_kube_context="dev"))
    assert "contexts: lab, prod" in unavailable(arch(metaflow_kube_context="dev"))
    assert "AWS_ACCESS_KEY_ID" in unavailable(arch(metaflow_kube_context="prod"))
    bare_env.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    bare_env.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    arch(metaflow_kube_context="prod").check()  # configured: no cluster is contacted


def test_kubernetes_command_line_and_kubeconfig(bare_env, tmp_path):
    (tmp_path / "kubeconfig").write_text(KUBECONFIG)
    bare_env.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    arch = MetaflowKubernetes(Settings({"metaflow_s3_root": "s3://bucket/mf/", "metaflow_image": "reg/mlpbench:1",
                                        "metaflow_kube_namespace": "bench", "metaflow_kube_context": "prod"}))
    arch.open(tmp_path / "session")
    cmd = arch.command(tmp_path / "flow.py", "{}", tmp_path / "id")
    assert "--datastore=s3" in cmd and "--datastore-root=s3://bucket/mf" in cmd and "--metadata=local" in cmd
    assert cmd[cmd.index("run"):][:5] == ["run", "--run-id-file", str(tmp_path / "id"), "--with",
                                          "kubernetes:image=reg/mlpbench:1,namespace=bench"]
    env = arch.environment()
    assert "METAFLOW_HOME" not in env  # the user's Metaflow configuration stays in force
    assert "current-context: prod" in Path(env["KUBECONFIG"]).read_text()
    assert "current-context: lab" in (tmp_path / "kubeconfig").read_text()
    assert "SHIP_FILES = True" in flow_source(LINEAR, ship_files=arch.ship_files)


def test_batch_skip_reasons_and_command_line(bare_env, tmp_path):
    def arch(**options):
        return MetaflowBatch(Settings({"metaflow_s3_root": "s3://b/p", "metaflow_image": "img", **options}))

    assert "--mlpbench-metaflow-batch-queue=QUEUE or METAFLOW_BATCH_JOB_QUEUE" in unavailable(arch())
    assert "METAFLOW_ECS_S3_ACCESS_IAM_ROLE" in unavailable(arch(metaflow_batch_queue="q"))
    bare_env.setenv("METAFLOW_ECS_S3_ACCESS_IAM_ROLE", "arn:aws:iam::1:role/r")
    assert "AWS_DEFAULT_REGION" in unavailable(arch(metaflow_batch_queue="q"))
    bare_env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    assert "AWS_ACCESS_KEY_ID" in unavailable(arch(metaflow_batch_queue="q"))
    bare_env.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    bare_env.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    batch = arch(metaflow_batch_queue="q")
    batch.check()
    batch.open(tmp_path)
    cmd = batch.command(tmp_path / "flow.py", "{}", tmp_path / "id")
    assert cmd[cmd.index("--with") + 1] == "batch:image=img,queue=q,iam_role=arn:aws:iam::1:role/r"


def test_remote_variants_are_skipped_with_the_reason(bench, bare_env):
    bench.tests()
    result = bench.run("--mlpbench-arch=metaflow-kubernetes,metaflow-batch", "-rs")
    result.assert_outcomes(skipped=2)
    result.stdout.fnmatch_lines(["*metaflow-kubernetes: no S3 datastore; set --mlpbench-metaflow-s3-root*",
                                 "*metaflow-batch: no S3 datastore; set --mlpbench-metaflow-s3-root*"])


# -- real runs with Metaflow's local runtime --


CONFTEST = """
from fakes import LINEAR, FANOUT, FAILING, FILES_FANOUT
from pytest_mlpbench.architectures.metaflow import MetaflowLocal


class Shipping(MetaflowLocal):
    '''metaflow-local with events and files carried as artifacts, as the remote variants do.'''
    name = "metaflow-shipping"
    ship_files = True


def pytest_mlpbench_register(registry):
    for workload in (LINEAR, FANOUT, FAILING, FILES_FANOUT):
        registry.add_workload(workload)
    registry.add_architecture("metaflow-shipping", Shipping)
"""

NATIVE_RUNS = '''

import json
from pathlib import Path

from pytest_mlpbench.architectures.metaflow.body import files_artifact
from workloads import scaling


def datastore_files(mlpbench, record):
    """Write what the datastore holds of each task's files: the files in its
    artifact, the artifact's sha and the size of its blob on disk."""
    from metaflow import Task, metadata, namespace

    store = mlpbench.session.architecture(mlpbench.arch_name).dir / "store"
    metadata(f"local@{store}")
    namespace(None)
    found = {}
    for row in record.steps:
        key = row["step"] if row["index"] is None else f"{row['step']}.{row['index']}"
        flow = row["metaflow_task"].split("/")[0]
        artifact = Task(row["metaflow_task"])[files_artifact(key)]
        blob = store / ".metaflow" / flow / "data" / artifact.sha[:2] / artifact.sha
        found[key] = {"files": {rel: len(data) for rel, data in artifact.data.items()},
                      "sha": artifact.sha, "blob_bytes": blob.stat().st_size}
    Path(f"datastore-{mlpbench.arch_name}-{record.workload}.json").write_text(json.dumps(found))


def test_handoff_native(mlpbench):
    [record] = mlpbench.run(scaling.handoff(2**20, "native"))
    datastore_files(mlpbench, record)


def test_fanout_files(mlpbench):
    [record] = mlpbench.run("fanout-files")
    datastore_files(mlpbench, record)
'''

RUNS = bench_source("linear", "fanout", "failing") + NATIVE_RUNS


class Session:
    def __init__(self, path: Path, proc: subprocess.CompletedProcess, leftovers: list):
        self.path, self.proc, self.leftovers = path, proc, leftovers
        self.output = proc.stdout + proc.stderr
        (path / "output.txt").write_text(self.output)
        self.records = [json.loads(line) for line in (path / "results" / "runs.jsonl").read_text().splitlines()]

    def record(self, arch: str, workload: str) -> dict:
        (found,) = [r for r in self.records if r["architecture"] == arch and r["workload"] == workload]
        return found


@pytest.fixture(scope="module")
def session(tmp_path_factory) -> Session:
    """One pytest session with real Metaflow runs; every test below reads it."""
    path = tmp_path_factory.mktemp("metaflow-runs")
    (path / "conftest.py").write_text(CONFTEST)
    (path / "test_runs.py").write_text(RUNS)
    (path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(path / "tmp"),  # the session directory, so leftovers can be found
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "--benchmark-json=bench.json",
         "--mlpbench-arch=metaflow-local,metaflow-shipping", "--mlpbench-rounds=1", "--mlpbench-warmup=0",
         "--mlpbench-scale=smoke", "--mlpbench-timeout=120", "--mlpbench-metaflow-max-workers=3",
         "-k", "metaflow-local and not fanout_files or metaflow-shipping and fanout"],
        cwd=path, env=env, capture_output=True, text=True, timeout=300,
    )
    leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                 if any(str(path) in arg for arg in p.info["cmdline"] or [])]
    return Session(path, proc, leftovers)


def assert_tasks(record: dict, expected: list[tuple[str, int | None]]) -> None:
    assert sorted((s["step"], s["index"] if s["index"] is not None else -1) for s in record["steps"]) == sorted(
        (step, -1 if index is None else index) for step, index in expected)
    for row in record["steps"]:
        assert row["outcome"] == "passed"
        assert f"/{row['step']}/" in row["metaflow_task"]  # RUN/STEP/TASK of Metaflow's client
        assert 0 < row["launch_delay_s"] < 60, row  # Metaflow created the task, then its process ran the step


def test_linear_flow_runs_for_real(session):
    record = session.record("metaflow-local", "linear")
    assert record["outcome"] == "passed", session.output
    assert_tasks(record, [("begin", None), ("middle", None), ("end", None)])
    assert record["metrics"] == {"value": 7.0}
    assert len({row["pid"] for row in record["steps"]}) == 3  # a process per task
    assert record["processes"] >= 4  # the runtime and its three tasks
    assert record["overhead_s"] > 0 and record["compute_s"] >= 3 * SCALES["smoke"]["sleep_s"]


@pytest.mark.parametrize("arch", ["metaflow-local", "metaflow-shipping"])
def test_fanout_flow_runs_for_real(session, arch):
    record = session.record(arch, "fanout")
    assert record["outcome"] == "passed", session.output
    assert_tasks(record, [("begin", None), ("shard", 0), ("shard", 1), ("shard", 2), ("gather", None)])
    assert record["metrics"] == {"total": 14.0}  # 1 + 4 + 9: every shard's output reached the join
    assert set(record["gaps"]) == {"begin->shard", "shard->gather"}


def datastore(session: Session, arch: str, workload: str) -> dict:
    return json.loads((session.path / f"datastore-{arch}-{workload}.json").read_text())


def test_native_handoff_carries_the_bytes_as_a_metaflow_artifact(session):
    record = session.record("metaflow-local", "handoff-native-1048576")
    assert record["outcome"] == "passed", session.output
    assert record["handoff"] == "native" and record["metrics"]["bytes_read"] == 2**20
    found = datastore(session, "metaflow-local", "handoff-native-1048576")
    assert found["write"]["files"] == {"handoff.bin": 2**20}
    assert found["write"]["blob_bytes"] >= 2**20  # random bytes: Metaflow's gzip cannot shrink them
    assert found["read"]["files"] == {}


def test_native_fan_out_hands_every_task_its_files_and_ships_them_back(session):
    """Run as the remote variants run (events and files shipped as artifacts) only: the rest is metaflow-local's."""
    record = session.record("metaflow-shipping", "fanout-files")
    assert record["outcome"] == "passed", session.output
    assert record["handoff"] == "native" and record["metrics"]["bytes_read"] == (1 + 2 + 3) * 1024
    found = datastore(session, "metaflow-shipping", "fanout-files")
    assert found["begin"]["files"] == {"seed.bin": 100}
    assert [found[f"shard.{i}"]["files"] for i in range(3)] == [{"part.bin": n * 1024} for n in (1, 2, 3)]
    assert len({found[f"shard.{i}"]["sha"] for i in range(3)}) == 3
    assert record["artifact_bytes"] == 100 + 6 * 1024  # each task's files, restored from the datastore


def test_failing_step_fails_the_benchmark_with_metaflows_error(session):
    record = session.record("metaflow-local", "failing")
    assert record["outcome"] == "failed"
    assert re.match(r"Metaflow run of MlpbenchFailingFlow failed in \d+/fail/\d+: RuntimeError: this step fails",
                    record["error"]), record["error"]
    assert "RuntimeError: this step fails on purpose" in record["error"]
    assert [(s["step"], s["outcome"]) for s in record["steps"]] == [("begin", "passed"), ("fail", "failed")]
    assert "metaflow-local / failing round 0: failed: Metaflow run of MlpbenchFailingFlow failed in" in session.output
    assert "RuntimeError: this step fails on purpose" in session.output
    assert re.search(r"\b1 failed, 5 passed\b", session.output), session.output


def test_no_metaflow_process_is_left_behind(session):
    assert session.proc.returncode == 1  # the failing benchmark
    assert session.leftovers == []


def test_timeout_kills_the_runtime_and_its_tasks(bench, monkeypatch):
    tmp = bench.path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))  # the session directory, so leftovers can be found
    bench.tests("def test_slow(mlpbench):\n    mlpbench.run('slow')\n")  # a step that sleeps 60 s
    result = bench.run("--mlpbench-arch=metaflow-local", "--mlpbench-rounds=1", "--mlpbench-timeout=3")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*timeout: Metaflow run of MlpbenchSlowFlow: run exceeded --mlpbench-timeout=3s*"])
    (record,) = bench.runs()
    assert record["outcome"] == "timeout" and 3 <= record["wall_s"] < 10
    leftovers = [p.info for p in psutil.process_iter(["pid", "cmdline"])
                 if any(str(tmp) in arg for arg in p.info["cmdline"] or [])]
    assert leftovers == []
