"""dagster-local: a real Dagster deployment (code server, webserver, daemon with the
run queue) runs the training workload and a fan-out; Dagster's own step times agree
with the step events; a timeout terminates the run; closing it leaves nothing
running; on PostgreSQL, its runs are kept there."""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import psutil
import pytest

from conftest import LOOPBACK, listening_ips
from fakes import AWAIT, FANOUT, LINEAR
from pytest_mlpbench import Step, Workload
from pytest_mlpbench.architectures import Unavailable
from pytest_mlpbench.architectures.dagster import DagsterLocal, task_key
from pytest_mlpbench.architectures.databases import parse_db
from pytest_mlpbench.architectures.dagster.instance import TUNED_COORDINATOR
from pytest_mlpbench.architectures.dagster.jobs import job_source
from pytest_mlpbench.model.workload import WorkloadError
from pytest_mlpbench.options import Settings
from pytest_mlpbench.plugin import everything
from pytest_mlpbench.session import BenchSession
from pytest_mlpbench.step.events import read_events
from workloads.training import WORKLOAD as TRAINING

TESTS = Path(__file__).parent
AGREE_S = 0.05  # Dagster's step times and the step events agree within this


def make_session(tmp: Path, **values) -> BenchSession:
    registry = everything()
    registry.architectures = {name: e for name, e in registry.architectures.items() if name == "dagster-local"}
    for workload in (LINEAR, FANOUT, AWAIT):
        registry.add_workload(workload)
    return BenchSession(registry.options.defaults(scale="smoke", **values), registry, tmp / "results")


# -- without a server ----------------------------------------------------------------------------


def test_the_job_maps_the_fanout_and_collects_it():
    source = job_source(FANOUT)
    compile(source, "mlpbench_fanout.py", "exec")
    assert "op_begin = step_op(WORKLOAD, 'begin', fans_out='shards')" in source
    assert "t0, t0_items = op_begin()" in source
    assert "t1 = t0_items.map(lambda index: op_shard(index=index, begin=t0))" in source
    assert "t2 = op_gather(shard=t1.collect())" in source
    assert task_key("shard[2]") == ("shard", 2) and task_key("begin") == ("begin", None)


def test_what_a_dagster_job_cannot_hold_is_refused_with_the_reason():
    bad = Workload("bad", "x:Y", (Step("index", "m:f"),), LINEAR.scales)
    with pytest.raises(WorkloadError, match="not a Dagster op name"):
        job_source(bad)
    nested = Workload("nested", "x:Y", (Step("a", "m:f"), Step("b", "m:f", needs=("a",), foreach="xs"),
                                          Step("c", "m:f", needs=("b",), foreach="ys")), LINEAR.scales)
    with pytest.raises(WorkloadError, match="one level deep"):
        job_source(nested)
    assert parse_db("sqlite") is None and parse_db("postgresql://u:p@h:5/d") == "postgresql://u:p@h:5/d"
    with pytest.raises(ValueError, match="expected 'sqlite' or postgresql://"):
        parse_db("mysql://x")


def test_framework_defaults_drop_only_the_tuning(tmp_path):
    def configured(**values):
        arch = DagsterLocal(Settings({"dagster_db": None, **values}))
        deployment = arch.make_deployment(tmp_path)
        return deployment.instance_config(), arch.execution(), arch.versions()["dagster-settings"]

    tuned, tuned_execution, tuned_name = configured()
    plain, plain_execution, plain_name = configured(framework_defaults=True)
    assert tuned["run_coordinator"]["config"] == TUNED_COORDINATOR and plain["run_coordinator"]["config"] == {}
    assert tuned_execution == {"execution": {"config": {"start_method": {"forkserver": {}}}}}
    assert plain_execution == {}
    for config in (tuned, plain):  # what it needs here either way
        assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
        assert config["telemetry"] == {"enabled": False} and "sqlite" in config["storage"]
    assert (tuned_name, plain_name) == ("tuned", "framework-defaults")


def test_bad_dagster_db_is_a_usage_error(pytester):
    result = pytester.runpytest("--mlpbench-dagster-db=mysql://x", "-p", "no:cacheprovider")
    result.stderr.fnmatch_lines(["*--mlpbench-dagster-db='mysql://x': expected 'sqlite' or postgresql://*"])
    assert result.ret == pytest.ExitCode.USAGE_ERROR


# -- one real Dagster for the tests below --------------------------------------------------------


@pytest.fixture(scope="module")
def dagster(tmp_path_factory):
    """Dagster on its default SQLite storage (PostgreSQL: the last test)."""
    session = make_session(tmp_path_factory.mktemp("dagster"))
    try:
        arch = session.architecture("dagster-local")
    except Unavailable as exc:
        session.close()
        pytest.skip(str(exc))
    yield session, arch
    session.close()


def run_live(session, arch, workload, timeout_s: float | None = None):
    arch.check_workload(workload)  # as a benchmark does before its timed rounds: the job is loaded
    live = session.start_run(arch, workload, round=0, warmup=False, params={})
    if timeout_s is not None:
        live.run.timeout_s = timeout_s
    try:
        live.execute()
    finally:
        record = session.finish_run(live)
    return live, record


def assert_times_agree(live) -> None:
    """Each op's own span in Dagster's event log (its last input loaded -> its first output)
    holds the step's span; STEP_START/STEP_SUCCESS hold both. Starts and ends agree within
    AGREE_S for every task (docs/dagster.md)."""
    events = {(e["step"], e["index"]): e for e in read_events(live.run.spec.events, live.run.spec.run_id)}
    info = live.run.task_info
    assert set(events) == set(info)
    ms = 1_000_000  # Dagster's GraphQL API gives milliseconds
    found = {}
    for key, event in events.items():
        dagster = info[key]
        assert dagster["dagster_status"] == "SUCCESS"
        assert dagster["started_ns"] <= dagster["compute_started_ns"] <= event["start_ns"] + ms, (key, dagster)
        assert event["end_ns"] <= dagster["compute_finished_ns"] + ms <= dagster["finished_ns"] + ms, (key, dagster)
        found[key] = ((event["start_ns"] - dagster["compute_started_ns"]) / 1e9,
                      (dagster["compute_finished_ns"] - event["end_ns"]) / 1e9)
    print(live.workload.name, {f"{k[0]}[{k[1]}]": (round(a, 4), round(b, 4)) for k, (a, b) in found.items()})
    assert max(max(pair) for pair in found.values()) < AGREE_S, f"Dagster's event log and the step events: {found}"


def test_training_runs_as_a_dagster_job(dagster):
    session, arch = dagster
    live, record = run_live(session, arch, TRAINING)
    assert record.outcome == "passed", record.error
    assert [s["step"] for s in record.steps] == ["prepare", "train", "evaluate"]
    assert 0 <= record.metrics["accuracy"] <= 1
    pids = {s["pid"] for s in record.steps}
    assert len(pids) == 3 and os.getpid() not in pids  # the multiprocess executor: an op per process
    assert all(s["dagster_status"] == "SUCCESS" and 0 <= s["launch_delay_s"] < 30 for s in record.steps)
    assert_times_agree(live)


def test_fanout_is_dynamic_outputs_mapped_and_collected(dagster):
    session, arch = dagster
    live, record = run_live(session, arch, FANOUT)
    assert record.outcome == "passed", record.error
    assert record.metrics == {"total": 14.0}
    assert sorted((s["step"], s["index"]) for s in record.steps) == [
        ("begin", None), ("gather", None), ("shard", 0), ("shard", 1), ("shard", 2)]
    assert_times_agree(live)
    [dagster_run] = {i["dagster_run_id"] for i in live.run.task_info.values()}
    assert arch.deployment.client.status(dagster_run) == "SUCCESS"


def test_a_timeout_terminates_the_run_and_its_op_process(dagster):
    session, arch = dagster
    note = []

    def shorten(live):  # once the op runs: the deadline in 1 s
        while not note:
            found = list(Path(live.run.spec.artifacts).glob("fault-*.json"))
            if found:
                note.append(json.loads(found[0].read_text()))
                live.run.timeout_s = time.monotonic() - live.run.started + 1.0
            time.sleep(0.1)

    arch.check_workload(AWAIT)
    live = session.start_run(arch, AWAIT, round=0, warmup=False, params={})
    watcher = threading.Thread(target=shorten, args=(live,), daemon=True)
    watcher.start()
    try:
        live.execute()
    finally:
        record = session.finish_run(live)
    assert record.outcome == "timeout" and "was terminated" in record.error, record.error
    [dagster_run] = {i["dagster_run_id"] for i in live.run.task_info.values()}
    worker = [int(e["message"].split("pid: ")[1].rstrip(").")) for e in arch.deployment.client.events(dagster_run)
              if e.get("message", "").startswith("Started process for run")]
    assert worker and not any(_alive(p) for p in _processes([note[0]["pid"], *worker]))  # the op's, the worker
    deadline = time.monotonic() + 30
    while arch.deployment.client.status(dagster_run) != "CANCELED":
        assert time.monotonic() < deadline, arch.deployment.client.status(dagster_run)
        time.sleep(0.2)


def test_close_stops_every_dagster_process_and_port(dagster):
    """Runs last in this module."""
    session, arch = dagster
    deployment = arch.deployment
    tree = [p for proc in deployment.procs.values() for p in [psutil.Process(proc.pid),
                                                              *psutil.Process(proc.pid).children(recursive=True)]]
    ports = {deployment.port, deployment.grpc_port}
    assert listening_ips(tree) and listening_ips(tree) <= LOOPBACK  # webserver and code server, on loopback only
    session.close()
    session.close()  # idempotent
    assert_all_gone(tree, ports)


def assert_all_gone(procs: list[psutil.Process], ports: set[int]) -> None:
    alive = [p for p in procs if _alive(p)]
    assert not alive, f"processes left running: {[(p.pid, p.cmdline()[:3]) for p in alive]}"
    listening = {c.laddr.port for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    assert not ports & listening, f"ports still listening: {ports & listening}"


def _processes(pids: list[int]) -> list[psutil.Process]:
    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def test_postgresql_storage_keeps_the_runs_and_close_leaves_nothing(tmp_path, postgres):
    """A Dagster of its own on PostgreSQL. (There, with three ops side by side on this 2-core
    machine, a step once started 50.5 ms after Dagster's last event before it, which is written
    to the storage first: the 50 ms agreement is checked on the default SQLite, above.)"""
    session = make_session(tmp_path, dagster_db=postgres.url)
    try:
        arch = session.architecture("dagster-local")
        assert arch.versions()["dagster-db"] == "postgresql"
        live, record = run_live(session, arch, LINEAR)
        assert record.outcome == "passed", record.error
        tree = [p for proc in arch.deployment.procs.values()
                for p in [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]]
        ports = {arch.deployment.port, arch.deployment.grpc_port}
    finally:
        session.close()
    assert_all_gone(tree, ports)
    import psycopg

    with psycopg.connect(postgres.url) as conn:
        kept = conn.execute("SELECT pipeline_name, status FROM runs").fetchall()
    assert kept == [("mlpbench_linear", "SUCCESS")]
