"""Airflow architectures: a real Airflow 3 (api-server, scheduler, dag-processor)
runs the fake workloads; PostgreSQL is a real server from the system's packages."""
from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from conftest import default_sigint
from fakes import FAILING, FANOUT, LINEAR, SLOW
from pytest_mlpbench.architectures import RunTimeout, Unavailable
from pytest_mlpbench.architectures.airflow import AirflowLocal
from pytest_mlpbench.architectures.airflow.client import AirflowError, timestamp_ns
from pytest_mlpbench.architectures.airflow.dags import dag_id, kubernetes_dag, local_dag
from pytest_mlpbench.architectures.airflow.server import TUNED_SETTINGS, parse_settings
from pytest_mlpbench.architectures.databases import redact, worker_database
from pytest_mlpbench.architectures.airflow.storage import local_dir, parse_uri
from pytest_mlpbench.architectures.base import Run
from pytest_mlpbench.model.dag import fanout_feeds
from pytest_mlpbench.model.workload import RunSpec, Step, Workload, WorkloadError
from pytest_mlpbench.options import Settings
from pytest_mlpbench.plugin import everything
from pytest_mlpbench.session import BenchSession
from workloads import scaling

TESTS = Path(__file__).parent
HAS_PROVIDER = importlib.util.find_spec("airflow.providers.cncf.kubernetes") is not None


def make_session(tmp: Path, **values) -> BenchSession:
    registry = everything()
    registry.architectures = {name: e for name, e in registry.architectures.items() if name.startswith("airflow")}
    for workload in (LINEAR, FANOUT, FAILING, SLOW):
        registry.add_workload(workload)
    return BenchSession(registry.options.defaults(scale="smoke", **values), registry, tmp / "results")


def airflow_tree(root: psutil.Process) -> list[psutil.Process]:
    return [p for p in root.children(recursive=True) if _alive(p)]


def listening_ports(procs: list[psutil.Process]) -> set[int]:
    ports = set()
    for proc in procs:
        try:
            ports |= {c.laddr.port for c in proc.net_connections("inet") if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            pass
    return ports


def assert_all_gone(procs: list[psutil.Process], ports: set[int]) -> None:
    alive = [p for p in procs if _alive(p)]
    assert not alive, f"processes left running: {[(p.pid, p.cmdline()[:3]) for p in alive]}"
    listening = {c.laddr.port for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    assert not ports & listening, f"ports still listening: {ports & listening}"


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# -- without a server ----------------------------------------------------------------------------


def test_local_dag_maps_the_fanout_over_the_upstream_list():
    source = local_dag(FANOUT)
    compile(source, "fanout.py", "exec")
    assert "dag_id='mlpbench_fanout'" in source
    assert ".partial(step='shard', upstream={'begin': t0['outputs']}, feeds=None).expand(item=t0)" in source
    assert "feeds='shards'" in source  # begin returns the list the fan-out maps over


def test_nested_fanout_is_refused_with_the_reason():
    nested = Workload("nested", "x:Y", (Step("a", "m:f"), Step("b", "m:f", needs=("a",), foreach="xs"),
                                          Step("c", "m:f", needs=("b",), foreach="ys")), LINEAR.scales)
    with pytest.raises(WorkloadError, match="map one level deep"):
        fanout_feeds(nested, "Airflow")


def test_settings_and_urls_are_parsed_and_redacted():
    assert parse_settings("scheduler.scheduler_idle_sleep_time=1, core.parallelism=4") == {
        "scheduler.scheduler_idle_sleep_time": "1", "core.parallelism": "4"}
    with pytest.raises(ValueError, match="section.key=value"):
        parse_settings("parallelism=4")
    assert redact("postgresql://u:secret@127.0.0.1:5/db") == "postgresql://u:***@127.0.0.1:5/db"
    assert timestamp_ns("1970-01-01T00:00:01.000002Z") == 1_000_002_000
    assert parse_uri("s3://aws_default@bucket/prefix/") == "s3://aws_default@bucket/prefix"
    assert parse_uri("/tmp/store") == "file:///tmp/store" and local_dir("file:///tmp/store") == Path("/tmp/store")
    with pytest.raises(ValueError, match="expected a URI"):
        parse_uri("s3://")


def test_framework_defaults_keep_only_what_airflow_needs_here(tmp_path):
    """Without a server: the settings each choice gives, and what machine_info says of it."""
    def configured(**values):
        arch = AirflowLocal(Settings({"airflow_db": None, "airflow_config": None, **values}))
        server = arch.make_server(tmp_path)
        return server.settings(), arch.versions()["airflow-settings"], server.commands()["scheduler"]

    tuned, tuned_name, tuned_scheduler = configured()
    plain, plain_name, plain_scheduler = configured(framework_defaults=True)
    assert tuned_scheduler == plain_scheduler == ["scheduler", "--skip-serve-logs"]  # no log server on 0.0.0.0
    assert tuned["scheduler.scheduler_idle_sleep_time"] == "0.1" and tuned["dag_processor.refresh_interval"] == "1"
    assert set(TUNED_SETTINGS) <= set(tuned) and not set(TUNED_SETTINGS) & set(plain)
    assert set(tuned) - set(plain) == set(TUNED_SETTINGS)
    assert {key: plain[key] for key in ("core.load_examples", "core.dags_are_paused_at_creation", "api.host")} == {
        "core.load_examples": "False", "core.dags_are_paused_at_creation": "False", "api.host": "127.0.0.1"}
    assert plain["api_auth.jwt_secret"] and plain["core.execution_api_server_url"].endswith("/execution/")
    assert (tuned_name, plain_name) == ("tuned", "framework-defaults")
    chosen, _, _ = configured(framework_defaults=True, airflow_config={"core.parallelism": "4"})
    assert chosen["core.parallelism"] == "4"  # what the user sets still wins


def test_bad_airflow_db_is_a_usage_error(pytester):
    result = pytester.runpytest("--mlpbench-airflow-db=mysql://x", "-p", "no:cacheprovider")
    result.stderr.fnmatch_lines(["*--mlpbench-airflow-db='mysql://x': expected 'sqlite' or postgresql://*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


def test_kubernetes_is_skipped_with_what_to_set(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    session = make_session(tmp_path)
    with pytest.raises(Unavailable) as no_context:
        session.architecture("airflow-kubernetes")
    want = "--mlpbench-airflow-kube-context=CONTEXT" if HAS_PROVIDER else "pip install apache-airflow-providers-cncf"
    assert want in str(no_context.value)
    if HAS_PROVIDER:
        session = make_session(tmp_path, airflow_kube_context="kind-ml", airflow_kube_image="img:1",
                               airflow_kube_volume="pvc")
        with pytest.raises(Unavailable, match="kube context 'kind-ml' not found in the kubeconfig"):
            session.architecture("airflow-kubernetes")


@pytest.mark.skipif(not HAS_PROVIDER, reason="pip install apache-airflow-providers-cncf-kubernetes")
def test_kubernetes_dag_parses_into_pod_operators(tmp_path):
    for workload in (LINEAR, FANOUT):
        source = kubernetes_dag(workload, context="kind-ml", namespace="ml", image="img:1", volume="pvc")
        (tmp_path / f"{workload.name}.py").write_text(source)
    script = textwrap.dedent(f"""
        import json
        from airflow.dag_processing.dagbag import DagBag
        bag = DagBag(dag_folder={str(tmp_path)!r})
        print(json.dumps({{"errors": {{k: str(v) for k, v in bag.import_errors.items()}},
                          "dags": {{d: {{t.task_id: [type(t).__name__, t.task_type,
                                                     sorted(u.task_id for u in t.upstream_list)]
                                        for t in dag.tasks}} for d, dag in bag.dags.items()}}}}))
    """)
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "home"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    parsed = json.loads(out.stdout.strip().splitlines()[-1])
    assert parsed["errors"] == {}
    linear = parsed["dags"]["mlpbench_k8s_linear"]
    assert linear["end"] == ["KubernetesPodOperator", "KubernetesPodOperator", ["begin", "middle"]]
    fanout = parsed["dags"]["mlpbench_k8s_fanout"]
    assert fanout["shard"] == ["MappedOperator", "KubernetesPodOperator", ["begin", "shard_items"]]
    assert fanout["gather"][2] == ["shard"]


def test_a_pod_runs_the_step_entry_point_with_its_templated_arguments(tmp_path):
    """What a pod of airflow-kubernetes runs, for real: upstream outputs as
    JSON, artifacts on the volume, outputs and events back in the XCom file."""
    spec = RunSpec(workload="fakes:FANOUT", scale="smoke", run_id="r1", artifacts="/elsewhere", events="/elsewhere",
                   params={"sleep_s": 0.0})
    xcom = tmp_path / "return.json"
    upstream = {"begin": {"begun": str(tmp_path / "vol" / "begin.json"), "shards": [1, 2, 3]}}
    cmd = [sys.executable, "-m", "pytest_mlpbench.step", "--step", "shard", "--index", "2",
           "--spec", json.dumps(spec.__dict__), "--artifacts", str(tmp_path / "vol"),
           "--upstream-json", json.dumps(upstream), "--events", str(tmp_path / "events.jsonl"),
           "--outputs", str(xcom), "--with-events"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(xcom.read_text())
    assert result["outputs"] == {"square": 9, "index": 2}
    assert [(e["step"], e["index"], e["outcome"]) for e in result["events"]] == [("shard", 2, "passed")]
    assert "mlpbench event:" in done.stdout  # kept in the pod's log
    assert (tmp_path / "vol").is_dir()


# -- one real Airflow (SQLite) for the tests below -----------------------------------------------


#: A fan-out whose tasks each write a file and whose gather reads them all: in native hand-off
#: each of its tasks has a KEY of its own in the object storage. A module of its own, on the
#: import path the servers get, so that task processes import it without this test module.
FILES_FANOUT = """
from pathlib import Path
from pytest_mlpbench import Step, Workload


def seed(ctx):
    (Path(ctx.artifacts) / "seed.txt").write_text("3")
    return {"seed": str(Path(ctx.artifacts) / "seed.txt"), "parts": [1, 2]}


def part(ctx, item, seed):
    path = Path(ctx.artifacts) / "part" / "value.txt"
    path.parent.mkdir()
    path.write_text(str(item * int(Path(seed).read_text())))
    return {"part": str(path)}


def total(ctx, part):
    ctx.metric("total", sum(int(Path(p).read_text()) for p in part))
    return {}


WORKLOAD = Workload(name="files-fanout", ref="airflow_files_fanout:WORKLOAD", handoff="native",
                    steps=(Step("seed", seed), Step("part", part, needs=("seed",), foreach="parts"),
                           Step("total", total, needs=("part",))),
                    scales={scale: {} for scale in ("smoke", "small", "full")})
"""


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    modules = tmp_path_factory.mktemp("modules")
    (modules / "airflow_files_fanout.py").write_text(FILES_FANOUT)
    sys.path.insert(0, str(modules))  # before the servers start: their task processes get this path
    session = make_session(tmp_path_factory.mktemp("airflow"))
    try:
        arch = session.architecture("airflow-local")
    except Unavailable as exc:
        session.close()
        pytest.skip(str(exc))
    yield session, arch
    session.close()
    sys.path.remove(str(modules))


def run_once(session, arch, workload):
    return session.run_once(arch, workload, round=0, warmup=False, params={})


def test_linear_runs_on_the_real_scheduler(airflow):
    session, arch = airflow
    record = run_once(session, arch, LINEAR)
    assert record.outcome == "passed", record.error
    assert record.metrics == {"value": 7.0}
    assert [s["step"] for s in record.steps] == ["begin", "middle", "end"]
    pids = {s["pid"] for s in record.steps}
    assert len(pids) == 3 and os.getpid() not in pids  # each task in its own process
    for row in record.steps:
        assert row["airflow_state"] == "success"
        assert 0 <= row["queue_delay_s"] < 30 and 0 <= row["launch_delay_s"] < 30
    assert record.overhead_s > 0 and set(record.gaps) == {"begin->middle", "middle->end", "begin->end"}


def test_fanout_is_dynamic_task_mapping(airflow):
    session, arch = airflow
    record = run_once(session, arch, FANOUT)
    assert record.outcome == "passed", record.error
    assert record.metrics == {"total": 14.0}
    shards = sorted((s["index"], s["queue_delay_s"] >= 0) for s in record.steps if s["step"] == "shard")
    assert shards == [(0, True), (1, True), (2, True)]


def test_native_handoff_goes_through_object_storage(airflow):
    session, arch = airflow
    size = 2**20
    record = run_once(session, arch, scaling.handoff(size, "native"))
    assert record.outcome == "passed", record.error
    assert record.handoff == "native" and record.metrics["bytes_read"] == size
    store = local_dir(arch.object_storage) / record.run_id
    assert (store / "write" / "handoff.bin").stat().st_size == size
    carried = session.session_dir / "runs" / record.run_id / "carried"
    assert (carried / "read" / "write" / "handoff.bin").stat().st_size == size  # read's own copy, from the store

    import airflow_files_fanout

    record = run_once(session, arch, airflow_files_fanout.WORKLOAD)
    assert record.outcome == "passed", record.error
    assert record.handoff == "native" and record.metrics == {"total": 9.0}
    store = local_dir(arch.object_storage) / record.run_id
    assert sorted(p.relative_to(store).as_posix() for p in store.rglob("*") if p.is_file()) == [
        "part.0/part/value.txt", "part.1/part/value.txt", "seed/seed.txt"]
    carried = session.session_dir / "runs" / record.run_id / "carried"
    assert sorted(p.relative_to(carried).as_posix() for p in carried.rglob("*") if p.is_file()) == [
        "part.0/seed/seed.txt", "part.1/seed/seed.txt", "total/part.0/part/value.txt",
        "total/part.1/part/value.txt"]


def test_a_failing_step_fails_the_run_with_its_log(airflow):
    session, arch = airflow
    record = run_once(session, arch, FAILING)
    assert record.outcome == "failed"
    assert "task fail failed" in record.error and "this step fails on purpose" in record.error
    assert [s["step"] for s in record.steps] == ["begin", "fail"]  # the failing step still left its event


def test_a_timeout_marks_the_dag_run_failed(airflow, tmp_path):
    session, arch = airflow
    run_id = f"timeout-{uuid.uuid4().hex[:8]}"
    (tmp_path / "artifacts").mkdir()
    spec = RunSpec(workload=SLOW.ref, scale="smoke", run_id=run_id, artifacts=str(tmp_path / "artifacts"),
                   events=str(tmp_path / "events.jsonl"))
    with pytest.raises(RunTimeout, match="marked failed"):
        arch.run(SLOW, Run(spec=spec, workload=SLOW, dir=tmp_path, timeout_s=8))
    assert arch.server.client.dag_run(dag_id(SLOW), run_id)["state"] == "failed"


def test_unauthenticated_requests_are_refused(airflow):
    _session, arch = airflow
    url = arch.server.url

    def status(path, token=None, method="GET", body=None):
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
        req = urllib.request.Request(url + path, data=body, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    trigger = json.dumps({"logical_date": None}).encode()
    assert status("/api/v2/dags") in (401, 403)
    assert status("/api/v2/dags", token="not-a-jwt") in (401, 403)
    assert status("/api/v2/dags/mlpbench_linear/dagRuns", method="POST", body=trigger) in (401, 403)
    wrong = json.dumps({"username": "mlpbench", "password": "wrong"}).encode()
    assert status("/auth/token", method="POST", body=wrong) == 401
    assert status("/api/v2/dags", token=arch.server.client.login()) == 200


#: From a component's SIGKILL to the end of the failed run: 3.3 to 4.3 s measured on a loaded
#: 2-core machine (0.1 s to notice, then the 2 s grace of stopping the rest and their exit).
DETECT_BOUND_S = 15


def kill_when_running(arch, component: str, run_id: str) -> tuple[float, list[psutil.Process]]:
    """SIGKILL ``component`` once the run's task process runs; return the time of the kill
    and every Airflow process just before it, the task's own included."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        tree = airflow_tree(psutil.Process())
        if task_titles(arch.server.client, run_id) & {_title(p) for p in tree}:
            os.kill(arch.server.procs[component].pid, signal.SIGKILL)
            return time.monotonic(), tree
    raise AssertionError(f"the task of {run_id} never started")


def task_titles(client, run_id: str) -> set[str]:
    """The titles Airflow gives the run's task processes: the task instances' ids."""
    try:
        return {f"airflow worker -- {ti['id']}" for ti in client.task_instances(dag_id(SLOW), run_id)}
    except AirflowError:  # not triggered yet
        return set()


def _title(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline()).strip()
    except psutil.Error:
        return ""


@pytest.mark.parametrize("component", ["scheduler", "dag-processor", "api-server"])
def test_a_killed_component_fails_the_run_at_once_and_airflow_restarts(airflow, component):
    session, arch = airflow
    live = session.start_run(arch, SLOW, round=0, warmup=False, params={})  # its step sleeps 60 s
    with ThreadPoolExecutor(1) as pool:
        killer = pool.submit(kill_when_running, arch, component, live.run.spec.run_id)
        live.execute()
        ended = time.monotonic()
        killed, tree = killer.result()
    record = session.finish_run(live)
    print(f"\n{component}: run failed {ended - killed:.2f} s after the SIGKILL")
    assert record.outcome == "failed"
    assert f"the Airflow {component} died (killed by SIGKILL)" in record.error
    assert f"The end of {component}.log:" in record.error
    assert ended - killed < DETECT_BOUND_S
    assert_all_gone(tree, {arch.server.port})  # re-parented task processes too
    assert not airflow_tree(psutil.Process())

    started = time.monotonic()
    arch.check_workload(LINEAR)  # where a benchmark restarts it, before its timed rounds
    print(f"{component}: Airflow restarted in {time.monotonic() - started:.1f} s")
    record = run_once(session, arch, LINEAR)
    assert record.outcome == "passed", record.error
    client, run_id = arch.server.client, live.run.spec.run_id
    assert client.dag_run(dag_id(SLOW), run_id)["state"] == "failed"  # the new scheduler does not run it again
    assert [ti["state"] for ti in client.task_instances(dag_id(SLOW), run_id)] == ["failed"]


def test_airflow_that_does_not_restart_is_unavailable_with_the_reason(airflow):
    session, arch = airflow
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        os.kill(arch.server.procs["api-server"].pid, signal.SIGKILL)
        arch.server.procs["api-server"].wait()
        squatter.bind(("127.0.0.1", arch.server.port))  # the restarted api-server cannot listen there
        squatter.listen()
        with pytest.raises(Unavailable, match="did not restart after the Airflow api-server died "
                                              r"\(killed by SIGKILL\): the Airflow api-server died \(exited"):
            arch.check_workload(LINEAR)
        assert not airflow_tree(psutil.Process())
        record = run_once(session, arch, LINEAR)  # for the rest of the session: a failed run with the reason
        assert record.outcome == "failed" and "did not restart" in record.error
    arch.unavailable = None  # the session never retries; the tests after this one need Airflow again
    arch.check_workload(LINEAR)


def test_close_stops_every_airflow_process_and_port(airflow):
    """Runs last in this module: after a passed, a failed and a timed-out run."""
    session, arch = airflow
    tree = airflow_tree(psutil.Process())
    ports = listening_ports(tree)
    assert arch.server.port in ports and len(tree) >= 3
    session.close()
    session.close()  # idempotent
    assert_all_gone(tree, ports)


# -- PostgreSQL, and a session interrupted with Ctrl-C --------------------------------------------

HANG = '''
import os, time
from pathlib import Path
from pytest_mlpbench import Step, Workload


def hang(ctx):
    Path(os.environ["MLPBENCH_TEST_MARKER"]).write_text(str(os.getpid()))
    time.sleep(120)
    return {}


HANG = Workload(name="hang", ref="hang:HANG", steps=(Step("hang", hang),),
                scales={s: {} for s in ("smoke", "small", "full")})
'''

CONFTEST = '''
from fakes import LINEAR
from hang import HANG


def pytest_mlpbench_register(registry):
    registry.add_workload(LINEAR)
    registry.add_workload(HANG)
'''

BENCH = '''
def test_linear(mlpbench):
    mlpbench.run("linear")


def test_hang(mlpbench):
    mlpbench.run("hang")
'''


def test_postgres_then_ctrl_c_leaves_nothing_running(pytester, postgres):
    pytester.makepyfile(hang=HANG, test_bench=BENCH)
    pytester.makeconftest(CONFTEST)
    marker = pytester.path / "hang-started"
    env = {**os.environ, "MLPBENCH_TEST_MARKER": str(marker),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    log = pytester.path / "pytest.log"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--mlpbench-arch=airflow-local",
           f"--mlpbench-airflow-db={postgres.url}", "--mlpbench-scale=smoke", "--mlpbench-rounds=1",
           "--mlpbench-warmup=0"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=pytester.path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=default_sigint)
    tree = []
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, f"pytest ended early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"the hang step never started:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        tree = airflow_tree(psutil.Process(proc.pid))
        ports = listening_ports(tree)
        assert ports and any(p.pid == int(marker.read_text()) for p in tree)
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=90)
    finally:
        if proc.poll() is None:  # the servers have sessions of their own
            for process in [psutil.Process(proc.pid), *tree]:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            proc.wait()
    output = log.read_text()
    assert "KeyboardInterrupt" in output, output[-3000:]
    assert_all_gone(tree, ports)
    runs = [json.loads(line) for line in (pytester.path / "results" / "runs.jsonl").read_text().splitlines()]
    assert [(r["workload"], r["outcome"]) for r in runs] == [
        ("linear", "passed"), ("linear", "passed"), ("hang", "interrupted")]
    import psycopg

    with psycopg.connect(postgres.url) as conn:
        states = conn.execute("SELECT state FROM dag_run WHERE dag_id = 'mlpbench_linear'").fetchall()
    assert states == [("success",), ("success",)]  # Airflow really kept its runs in PostgreSQL


def test_ctrl_c_while_airflow_starts_leaves_nothing_running(pytester):
    """SIGINT while the api-server is still starting: the session ends with pytest's
    KeyboardInterrupt line, and every Airflow process and port is gone."""
    pytester.makepyfile(hang=HANG, test_bench=BENCH)
    pytester.makeconftest(CONFTEST)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    log = pytester.path / "pytest.log"
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--mlpbench-arch=airflow-local",
           "--mlpbench-scale=smoke", "--mlpbench-rounds=1", "--mlpbench-warmup=0"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=pytester.path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=default_sigint)
    tree: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 120
        while not any("api-server" in " ".join(p.cmdline()) for p in tree if _alive(p)):
            assert proc.poll() is None, f"pytest ended early:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "the api-server never started"
            time.sleep(0.1)
            tree = airflow_tree(psutil.Process(proc.pid))
        ports = listening_ports(tree)
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            for process in [psutil.Process(proc.pid), *tree]:
                with contextlib.suppress(psutil.Error):
                    process.kill()
            proc.wait()
    output = log.read_text()
    assert "KeyboardInterrupt" in output and "Traceback" not in output, output[-3000:]
    assert_all_gone(tree, ports)



def test_each_xdist_worker_gets_a_database_of_its_own(postgres):
    """Two workers' Airflows on one PostgreSQL: each its own database, made once."""
    import psycopg

    urls = [worker_database(postgres.url, worker) for worker in ("gw0", "gw1", "gw1")]
    assert urls[0].endswith(f"/{postgres.database}_gw0") and urls[1] == urls[2] != urls[0]
    with psycopg.connect(urls[1]) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (f"{postgres.database}_gw1",)


def test_a_worker_database_that_cannot_be_made_says_why(monkeypatch, tmp_path):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
    arch = AirflowLocal(Settings({"airflow_db": "postgresql://u:secret@127.0.0.1:1/db", "airflow_config": None}))
    with pytest.raises(Unavailable, match=r"each worker's Airflow needs a database of its own, and "
                                          r"postgresql://u:\*\*\*@127\.0\.0\.1:1/db could not give one: OperationalError"):
        arch.open(tmp_path)
