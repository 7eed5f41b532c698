"""``dagster-local``: a real local Dagster deployment per session (see
:mod:`.instance`): code server, webserver and daemon on one DAGSTER_HOME with
SQLite storage, or PostgreSQL with ``--mlpbench-dagster-db``. Each workload
becomes a generated job in the session's code location (an op per step, fan-out
as dynamic outputs, the multiprocess executor: an op per process); a run is
launched through the webserver's GraphQL API into the run queue, which the
daemon hands to the code server for a run worker. After the run, Dagster's own
step events (STEP_START, inputs loaded, STEP_OUTPUT, STEP_SUCCESS/FAILURE) are
read from the run's event log into the record beside the step events.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
from pathlib import Path

import psutil

from pytest_mlpbench.architectures.base import (FRAMEWORK_DEFAULTS, Architecture, RunFailed, Unavailable,
                                                poll_until, step_environment)
from pytest_mlpbench.architectures.dagster.client import FINISHED, DagsterError, timestamp_ns
from pytest_mlpbench.architectures.dagster.instance import (BROKEN_GRACE_S, LOCATION, ComponentDied,
                                                            DagsterDeployment, end_tree)
from pytest_mlpbench.architectures.dagster.jobs import check, job_name, job_source
from pytest_mlpbench.architectures.databases import parse_db, session_database, with_driver
from pytest_mlpbench.architectures.subprocesses import task_failure
from pytest_mlpbench.model.workload import WorkloadError
from pytest_mlpbench.options import Option

__all__ = ["DagsterLocal"]


DB = Option("dagster_db", "Dagster storage (runs, event log, schedules) for dagster-local: 'sqlite' (default, "
            "files in the session's DAGSTER_HOME) or postgresql://USER:PASSWORD@HOST:PORT/DB (dagster-postgres).",
            parse_db, None, "URL")

#: The tuning of the multiprocess executor (docs/settings.md).
TUNED_EXECUTOR = {"start_method": {"forkserver": {}}}
POLL_S = 0.1  # run status polls, as airflow-local's
#: How long a terminated run's worker gets to stop its op processes before they are killed.
TERMINATE_GRACE_S = 5.0
_STEP_KEY = re.compile(r"^(?P<step>[A-Za-z0-9_]+)(?:\[(?P<key>[^\]]+)\])?$")
_WORKER = re.compile(r"Started process for run \(pid: (?P<pid>\d+)\)")
#: Dagster's engine event when an op's process ended without reporting (get_run_crash_explanation).
_CRASH = re.compile(r"child process for step \S+ (?:was terminated by signal (?P<signal>\d+)[^.]*|unexpectedly "
                    r"exited with code (?P<code>-?\d+))")


class DagsterLocal(Architecture):
    name = "dagster-local"
    options = (DB, FRAMEWORK_DEFAULTS)

    def __init__(self, settings=None):
        super().__init__(settings)
        self.deployment: DagsterDeployment | None = None
        self.jobs: set[str] = set()  # jobs in the code location
        self.unavailable: str | None = None

    def check(self) -> None:
        for module, pip in (("dagster", "dagster"), ("dagster_webserver", "dagster-webserver")):
            if importlib.util.find_spec(module) is None:
                raise Unavailable(f"{self.name}: {pip} is not installed; pip install dagster dagster-webserver")
        if self.option("dagster_db") and importlib.util.find_spec("dagster_postgres") is None:
            raise Unavailable(f"{self.name}: --mlpbench-dagster-db needs dagster-postgres: pip install dagster-postgres")

    def open(self, session_dir: Path) -> None:
        self.deployment = self.make_deployment(Path(session_dir))
        try:
            self.deployment.start()
        except DagsterError as exc:
            self.close()
            raise RuntimeError(f"{self.name}: Dagster did not start: {exc}") from None

    def make_deployment(self, session_dir: Path) -> DagsterDeployment:
        db = self.option("dagster_db")
        # dagster-postgres is written for psycopg2; SQLAlchemy 2.1 takes psycopg 3 for a plain postgresql://
        db = db and with_driver(session_database(db, self.name, "Dagster"), "psycopg2")
        return DagsterDeployment(session_dir / "dagster-home", db_url=db,
                                 pythonpath=step_environment(os.devnull)["PYTHONPATH"],
                                 tuned=not self.option("framework_defaults", False))

    def check_workload(self, workload) -> None:
        # Before a benchmark's runs and outside their timing: restarts and code reloads cost no run its time.
        try:
            check(workload)
        except WorkloadError as exc:
            raise Unavailable(str(exc)) from None
        self.ensure_running()
        self.ensure_job(workload)

    def ensure_job(self, workload) -> str:
        name = job_name(workload)
        if name not in self.jobs:
            try:
                self.deployment.add_job(name, job_source(workload))
            except ComponentDied:
                raise
            except DagsterError as exc:
                raise RunFailed(f"{self.name}: Dagster could not load the generated job {name}: {exc}") from None
            self.jobs.add(name)
        return name

    def ensure_running(self) -> None:
        """Restart Dagster if a component died since the last run; :class:`Unavailable`
        for the rest of the session if it does not come back."""
        if self.unavailable:
            raise Unavailable(self.unavailable)
        death = self.deployment.death()
        if death is None:
            return
        try:
            self.deployment.restart()
        except DagsterError as exc:
            self.unavailable = f"{self.name}: Dagster did not restart after {death.summary}: {exc}"
            raise Unavailable(self.unavailable) from None

    def run(self, workload, run) -> None:
        self.ensure_running()
        deployment = self.deployment
        run.logs.extend(deployment.home / f"{c}.log" for c in deployment.COMPONENTS)
        try:
            name = self.ensure_job(workload)
            payload = json.dumps({"spec": run.spec.__dict__, "env": run.env})
            run_config = {"resources": {"mlpbench": {"config": {"payload": payload}}}, **self.execution()}
            dagster_run = deployment.client.launch(LOCATION, name, name, run_config,
                                                   {"mlpbench/run_id": run.spec.run_id})
            try:
                status = self.wait(dagster_run, run)
            finally:
                events = self.read_events(dagster_run)
                record_steps(run, events, dagster_run)
        except ComponentDied as death:
            deployment.stop(BROKEN_GRACE_S)
            raise RunFailed(f"{self.name}: {death.summary} during the run; every Dagster process was stopped "
                            f"and Dagster is restarted before the next run. {death.log}") from None
        except DagsterError as exc:
            raise RunFailed(f"{self.name}: {exc}") from None
        if status != "SUCCESS":
            raise RunFailed(failure_message(run, dagster_run, status, events))

    def execution(self) -> dict:
        """The multiprocess executor's run config: with the tuning, op processes fork from a
        forkserver that has imported Dagster once, instead of each spawning a fresh interpreter
        that imports it anew (Dagster's default, ``spawn``). See docs/settings.md."""
        if self.option("framework_defaults", False):
            return {}
        return {"execution": {"config": TUNED_EXECUTOR}}

    def wait(self, dagster_run: str, run) -> str:
        status = "QUEUED"

        def finished():
            nonlocal status
            self.deployment.check_alive()
            try:
                status = self.deployment.client.status(dagster_run)
            except DagsterError as exc:
                if exc.status is not None:
                    raise
                # A slow answer on a loaded machine is not a failed run; the deadline still holds.
            return status if status in FINISHED else None

        return poll_until(finished, run, POLL_S, stop=lambda: self.terminate(dagster_run),
                          what=lambda: f"Dagster run {dagster_run} was {status}; it was terminated")

    def terminate(self, dagster_run: str) -> None:
        """Terminate the run through Dagster (its worker stops the op processes and marks the
        run CANCELED); kill what is left of the worker and its processes after a grace period.
        They are found first: the worker is a process of the code server's whose pid Dagster logs."""
        tree = run_tree(self.read_events(dagster_run))
        try:
            self.deployment.client.terminate(dagster_run)
        except DagsterError:
            pass
        _gone, alive = psutil.wait_procs(tree, timeout=TERMINATE_GRACE_S)
        end_tree(alive, grace_s=0)

    def read_events(self, dagster_run: str) -> list[dict]:
        try:
            return self.deployment.client.events(dagster_run)
        except DagsterError:
            return []

    def close(self) -> None:
        if self.deployment is not None:
            self.deployment.stop()

    def versions(self) -> dict[str, str]:
        found = {}
        for dist in ("dagster", "dagster-webserver", "dagster-postgres"):
            try:
                found[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
        found["dagster-db"] = "postgresql" if self.option("dagster_db") else "sqlite"
        found["dagster-settings"] = "framework-defaults" if self.option("framework_defaults", False) else "tuned"
        return found


def run_tree(events: list[dict]) -> list[psutil.Process]:
    """The run's worker (``Started process for run (pid: N).``) and every process under it."""
    found = [int(m["pid"]) for e in events if not e.get("stepKey") and (m := _WORKER.search(e.get("message") or ""))]
    tree = []
    for pid in found[-1:]:
        try:
            worker = psutil.Process(pid)
            tree += [worker, *worker.children(recursive=True)]
        except psutil.Error:
            pass
    return tree


def task_key(step_key: str) -> tuple[str, int | None]:
    """``shard[2]`` -> ("shard", 2); ``begin`` -> ("begin", None)."""
    match = _STEP_KEY.match(step_key)
    if not match:
        return step_key, None
    key = match["key"]
    return match["step"], (int(key) if key is not None and key.isdigit() else None)


def record_steps(run, events: list[dict], dagster_run: str) -> None:
    """Dagster's own times of each op, from the run's event log: ``started_ns`` (STEP_START),
    ``compute_started_ns`` (its last input loaded, or STEP_START), ``compute_finished_ns``
    (its first STEP_OUTPUT, or its STEP_FAILURE) and ``finished_ns`` (STEP_SUCCESS/FAILURE)."""
    steps: dict[str, dict] = {}
    for event in events:
        key, kind = event.get("stepKey"), event.get("eventType")
        if not key or not kind:
            continue
        info, ns = steps.setdefault(key, {}), timestamp_ns(event)
        if kind == "STEP_START":
            info["started_ns"] = ns
        elif kind in ("STEP_INPUT", "LOADED_INPUT"):
            info["inputs_ns"] = ns
        elif kind == "STEP_OUTPUT":
            info.setdefault("compute_finished_ns", ns)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
            info["finished_ns"] = ns
            info.setdefault("compute_finished_ns", ns)
            info["dagster_status"] = "SUCCESS" if kind == "STEP_SUCCESS" else "FAILURE"
    for key, info in steps.items():
        inputs = info.pop("inputs_ns", None)
        if "started_ns" in info:
            info["compute_started_ns"] = max(inputs or 0, info["started_ns"])
            info["dagster_inputs_s"] = round((info["compute_started_ns"] - info["started_ns"]) / 1e9, 6)
        if "finished_ns" in info:
            info["dagster_outputs_s"] = round((info["finished_ns"] - info["compute_finished_ns"]) / 1e9, 6)
        step, index = task_key(key)
        run.add_task_info(step, index, dagster_run_id=dagster_run, **info)


def failure_message(run, dagster_run: str, status: str, events: list[dict]) -> str:
    """The failed op's name and error (its step event's, where it wrote one) or how its process
    ended (Dagster's engine event says it), with Dagster's own message; else the run's failure."""
    for event in events:
        if event.get("__typename") != "ExecutionStepFailureEvent":
            continue
        step_key = event["stepKey"]
        step, index = task_key(step_key)
        error = ((event.get("error") or {}).get("message") or event.get("message") or "").strip()
        crash = [_CRASH.search(e.get("message") or "") for e in events
                 if e.get("stepKey") == step_key and e.get("eventType") == "ENGINE_EVENT"]
        crash = next((found for found in crash if found), None)
        code = -int(crash["signal"]) if crash and crash["signal"] else int(crash["code"]) if crash else None
        said = crash.group(0) if crash else error.splitlines()[0] if error else ""
        return f"Dagster run {dagster_run} {status}: {task_failure(run, step, index, code, 'its op process')}. " \
               f"Dagster: {said}"
    failures = [(e.get("runFailureError") or {}).get("message") or e.get("message") for e in events
                if e.get("__typename") == "RunFailureEvent"]
    return f"Dagster run {dagster_run} ended {status}" + (f": {failures[-1]}" if failures else "")

