"""prefect-local: a real Prefect 3 server, process work pool and worker (in
Prefect's own environment, .venv-prefect) run the fake workloads and the
training workload; Prefect's own task-run state timestamps are checked against
the steps' events."""
from __future__ import annotations

import contextlib
import os
import threading
import uuid
from pathlib import Path

import psutil
import pytest

from conftest import LOOPBACK, listening_ips, postgres_if_installed
from fakes import FANOUT, SLOW
from pytest_mlpbench.architectures import RunTimeout, Unavailable
from pytest_mlpbench.architectures.base import Run
from pytest_mlpbench.architectures.databases import with_driver
from pytest_mlpbench.architectures.prefect import PrefectLocal
from pytest_mlpbench.architectures.prefect.flows import flow_source
from pytest_mlpbench.architectures.prefect.server import TUNED_SETTINGS, PrefectServer
from pytest_mlpbench.model.workload import RunSpec, Step, Workload, WorkloadError
from pytest_mlpbench.plugin import everything
from pytest_mlpbench.session import BenchSession
from pytest_mlpbench.step.events import read_events
from workloads.training import WORKLOAD as TRAINING

#: Prefect's Running and Completed states of a task against its step event's start and end: the
#: task runs its step in-process in a pool process, so only Prefect's own task engine lies between.
AGREE_S = 0.05


def make_session(tmp: Path, **values) -> BenchSession:
    registry = everything()
    registry.architectures = {n: e for n, e in registry.architectures.items() if n == "prefect-local"}
    for workload in (FANOUT, SLOW, TRAINING):
        registry.add_workload(workload)
    return BenchSession(registry.options.defaults(scale="smoke", **values), registry, tmp / "results")


# -- without a server ----------------------------------------------------------------------------

def test_the_flow_maps_the_fanout_and_compiles():
    source = flow_source(FANOUT, "")
    compile(source, "flow.py", "exec")
    assert ".with_options(name='shard').map(" in source and "ProcessPoolTaskRunner(\n        max_workers=8, initializer=import_steps" in source
    steps = (Step("a", lambda ctx: {}), Step("b", lambda ctx, item: {}, needs=("a",), foreach="xs"),
             Step("c", lambda ctx, item: {}, needs=("b",), foreach="ys"))
    nested = Workload(name="nested", ref="x:Y", steps=steps, scales={s: {} for s in ("smoke", "small", "full")})
    with pytest.raises(WorkloadError, match="Prefect: fan-out step 'c' follows fan-out step 'b'"):
        flow_source(nested, "")


def test_a_directory_without_prefect_is_refused_with_what_to_do(tmp_path):
    arch = PrefectLocal(everything().options.defaults(prefect_venv=str(tmp_path)))
    with pytest.raises(Unavailable, match="has no Prefect; it needs Prefect 3"):
        arch.check()
    assert with_driver("postgresql://u:p@h:5/db", "asyncpg") == "postgresql+asyncpg://u:p@h:5/db"


def test_framework_defaults_drop_only_the_tuning(tmp_path):
    tuned = PrefectServer(tmp_path, tmp_path / "prefect").settings()
    defaults = PrefectServer(tmp_path, tmp_path / "prefect", tuned=False).settings()
    assert tuned == {**defaults, **TUNED_SETTINGS} and not set(TUNED_SETTINGS) & set(defaults)
    assert tuned["PREFECT_WORKER_QUERY_SECONDS"] == "0.2" and defaults["PREFECT_UI_ENABLED"] == "false"


# -- a real Prefect ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prefect(tmp_path_factory):
    """One real Prefect for the tests below, on PostgreSQL where it is installed (the SQLite
    default runs in test_fault_matrix.py)."""
    with postgres_if_installed("prefect") as pg:
        session = make_session(tmp_path_factory.mktemp("prefect"), **({"prefect_db": pg.url} if pg else {}))
        try:
            arch = session.architecture("prefect-local")
        except Unavailable as exc:
            session.close()
            pytest.skip(str(exc))
        runs: list[Run] = []
        run = arch.run
        arch.run = lambda workload, r: (runs.append(r), run(workload, r))[1]  # keep each Run: its task_info
        yield session, arch, runs, pg
        session.close()


def run_once(session, arch, workload):
    return session.run_once(arch, workload, round=0, warmup=False, params={})


def check_timestamps(session, record, run: Run) -> None:
    """Every task's Prefect timestamps against its step event, on the same clock: Pending <= Running
    <= step start <= step end <= Completed, Running within ``AGREE_S`` of the start and Completed
    within ``AGREE_S`` of the end."""
    events = {(e["step"], e.get("index")): e for e in
              read_events(session.session_dir / "runs" / record.run_id / "events.jsonl", record.run_id)}
    assert set(run.task_info) == set(events)
    found = {}
    for key, event in events.items():
        info = run.task_info[key]
        assert info["prefect_state"] == "COMPLETED"
        assert info["created_ns"] <= info["queued_ns"] <= info["started_ns"] <= event["start_ns"], (key, info)
        assert event["end_ns"] <= info["finished_ns"], (key, info, event)
        found[key] = ((event["start_ns"] - info["started_ns"]) / 1e9, (info["finished_ns"] - event["end_ns"]) / 1e9)
    print(record.workload, {f"{k[0]}[{k[1]}]": (round(a, 4), round(b, 4)) for k, (a, b) in found.items()})
    assert max(max(pair) for pair in found.values()) < AGREE_S, f"Prefect's states and the step events: {found}"


def test_training_with_prefects_own_task_timestamps(prefect):
    session, arch, runs, _ = prefect
    record = run_once(session, arch, TRAINING)
    assert record.outcome == "passed", record.error
    assert [s["step"] for s in record.steps] == [s.name for s in TRAINING.steps]
    assert 0 <= record.metrics["accuracy"] <= 1
    check_timestamps(session, record, runs[-1])
    for row in record.steps:  # queue and launch delays from Prefect's own timestamps
        assert row["prefect_state"] == "COMPLETED" and 0 <= row["queue_delay_s"] < 5
        assert 0 < row["launch_delay_s"] < AGREE_S


def test_the_fanout_is_mapped_over_the_task_runner(prefect):
    session, arch, runs, _ = prefect
    record = run_once(session, arch, FANOUT)
    assert record.outcome == "passed", record.error
    assert record.metrics == {"total": 14.0}
    check_timestamps(session, record, runs[-1])
    shards = [s for s in record.steps if s["step"] == "shard"]
    assert sorted(s["index"] for s in shards) == [0, 1, 2]
    assert os.getpid() not in {s["pid"] for s in record.steps}  # in the task runner's pool processes


def test_a_timeout_cancels_the_flow_run_and_ends_its_processes(prefect, tmp_path):
    session, arch, _, _ = prefect
    run_id = f"timeout-{uuid.uuid4().hex[:8]}"
    (tmp_path / "artifacts").mkdir()
    spec = RunSpec(workload=SLOW.ref, scale="smoke", run_id=run_id, artifacts=str(tmp_path / "artifacts"),
                   events=str(tmp_path / "events.jsonl"))
    run = Run(spec=spec, workload=SLOW, dir=tmp_path, timeout_s=8)
    worker, seen, done = psutil.Process(arch.server.procs["worker"].pid), set(), threading.Event()

    def watch():  # the flow-run process and its task runner's pool, while they live
        while not done.wait(0.2):
            with contextlib.suppress(psutil.Error):
                seen.update(worker.children(recursive=True))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(RunTimeout, match="is cancelled"):
            arch.run(SLOW, run)
    finally:
        done.set()
        watcher.join()
    assert len(seen) >= 2, "no flow-run process with a pool process was seen"
    assert not [p for p in seen if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], "outlived the timeout"
    flow_runs = arch.server.client.api("POST", "/flow_runs/filter", {"flow_runs": {"name": {"any_": [run_id]}}})
    assert [f["state_type"] for f in flow_runs] == ["CANCELLED"]


def test_its_flow_runs_are_kept_in_postgresql(prefect):
    session, arch, runs, pg = prefect
    if pg is None:
        pytest.skip("no PostgreSQL server is installed (apt-get install postgresql): Prefect ran on SQLite")
    import psycopg

    with psycopg.connect(pg.url) as conn:
        kept = dict(conn.execute("SELECT name, state_type FROM flow_run").fetchall())
    # training, fan-out, timeout
    assert [kept.get(r.spec.run_id) for r in runs] == ["COMPLETED", "COMPLETED", "CANCELLED"]
    assert arch.versions()["prefect-db"] == "postgresql"


def test_close_stops_every_prefect_process_and_port(prefect):
    session, arch, _, _ = prefect
    procs = [psutil.Process(p.pid) for p in arch.server.procs.values()]
    tree = procs + [c for p in procs for c in p.children(recursive=True)]
    port = arch.server.port
    assert listening_ips(tree) and listening_ips(tree) <= LOOPBACK  # the server, and nothing else, on loopback only
    arch.close()
    arch.close()  # idempotent
    assert not [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    listening = {c.laddr.port for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN}
    assert port not in listening
