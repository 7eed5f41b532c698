"""One workload run on a running Airflow, through its REST API: make sure the
DAG is parsed, trigger it, wait for the DAG run, read the task instances.
Every wait calls ``check`` each time round, which raises if a component died."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from pytest_mlpbench.architectures.airflow.client import AirflowClient, AirflowError, timestamp_ns
from pytest_mlpbench.architectures.airflow.dagtask import CONF_KEY
from pytest_mlpbench.architectures.base import Run, RunFailed, RunTimeout, poll_until

FINISHED = ("success", "failed")
FAILED_TASK_STATES = ("failed", "upstream_failed")


class DagDriver:
    def __init__(self, client: AirflowClient, dags_folder: Path, check: Callable[[], None], poll_s: float = 0.1,
                 parse_timeout_s: float = 120.0, reparse: Callable[[Run], None] | None = None):
        self.client = client
        self.reparse = reparse  # makes Airflow parse a new DAG file now, where it would not soon by itself
        self.dags_folder = Path(dags_folder)
        self.check = check
        self.poll_s = poll_s
        self.parse_timeout_s = parse_timeout_s
        self._ready: set[str] = set()

    def ensure_dag(self, dag_id: str, source: str, run: Run) -> None:
        """Write the DAG file (once per session) and wait until the dag-processor has parsed it."""
        if dag_id in self._ready:
            return
        path = self.dags_folder / f"{dag_id}.py"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(source)
        written_ns = time.time_ns()
        tmp.replace(path)  # the dag-processor never sees half a file
        if self.reparse:
            self.reparse(run)
        limit = _limit(run, self.parse_timeout_s)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            self.check()
            try:
                if self._parsed(dag_id, path, written_ns):
                    self._ready.add(dag_id)
                    return
                errors = self.client.import_errors(path.name)
            except AirflowError as exc:
                if exc.status is not None:
                    raise
                errors = []  # a slow answer: ask again
            if errors:
                raise RunFailed(f"Airflow could not import the generated DAG {path.name}:\n{errors[-1]}")
            time.sleep(0.2)
        if run.remaining_s() == 0:
            raise RunTimeout(f"run exceeded --mlpbench-timeout={run.timeout_s:g}s waiting for DAG {dag_id} to be parsed")
        raise RunFailed(f"the dag-processor did not parse {path} within {limit:g}s")

    def _parsed(self, dag_id: str, path: Path, written_ns: int) -> bool:
        """Parsed from this session's file: a reused PostgreSQL database still knows
        the DAG from an earlier session, whose file is gone."""
        dag = self.client.dag(dag_id)
        if dag is None or dag["is_stale"] or dag["fileloc"] != str(path):
            return False
        if (timestamp_ns(dag["last_parsed_time"]) or 0) < written_ns:
            return False
        if dag["is_paused"]:  # paused by hand in an earlier session
            self.client.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
        return True

    def run(self, dag_id: str, run: Run, conf_extra: dict | None = None) -> dict:
        """Trigger ``dag_id`` for ``run``, wait for it, record its task instances; return the final DAG run."""
        run_id = run.spec.run_id
        conf = {CONF_KEY: {"spec": vars(run.spec), "env": run.env, **(conf_extra or {})}}
        self._trigger(dag_id, run_id, conf, run)
        try:
            dag_run = self._wait(dag_id, run)
        except BaseException:
            self.fail_quietly(dag_id, run_id)
            raise
        finally:
            self._record_tasks(dag_id, run)
        if dag_run["state"] != "success":
            raise RunFailed(self._failure(dag_id, run_id))
        return dag_run

    def _trigger(self, dag_id: str, run_id: str, conf: dict, run: Run) -> None:
        while True:
            self.check()
            try:
                self.client.trigger(dag_id, run_id, conf)
                return
            except AirflowError as exc:
                if exc.status == 409:  # an earlier, slow attempt did create it
                    return
                if exc.status is not None or run.remaining_s() == 0:
                    raise RunFailed(f"Airflow refused to trigger {dag_id}: {exc}") from None
            time.sleep(self.poll_s)

    def _wait(self, dag_id: str, run: Run) -> dict:
        dag_run = {"state": "queued"}

        def finished():
            nonlocal dag_run
            self.check()
            try:
                dag_run = self.client.dag_run(dag_id, run.spec.run_id)
            except AirflowError as exc:
                if exc.status is not None:
                    raise
                # A slow answer on a loaded machine is not a failed run; the deadline still holds.
            return dag_run if dag_run["state"] in FINISHED else None

        return poll_until(finished, run, self.poll_s,
                          what=lambda: f"DAG run {run.spec.run_id} was {dag_run['state']} and is marked failed")

    def fail_quietly(self, dag_id: str, run_id: str) -> None:
        """Mark an abandoned DAG run failed so its tasks are stopped and the next run is not queued behind it."""
        try:
            self.client.set_dag_run_state(dag_id, run_id, "failed")
        except AirflowError:
            pass

    def _record_tasks(self, dag_id: str, run: Run) -> None:
        try:
            tis = self.client.task_instances(dag_id, run.spec.run_id)
        except AirflowError:
            return
        for ti in tis:
            run.add_task_info(
                ti["task_id"],
                ti["map_index"] if ti["map_index"] >= 0 else None,
                queued_ns=timestamp_ns(ti.get("queued_when")),
                started_ns=timestamp_ns(ti.get("start_date")),
                finished_ns=timestamp_ns(ti.get("end_date")),
                scheduled_ns=timestamp_ns(ti.get("scheduled_when")),
                airflow_state=ti.get("state"),
                airflow_try=ti.get("try_number"),
            )

    def _failure(self, dag_id: str, run_id: str) -> str:
        tis = self.client.task_instances(dag_id, run_id)
        failed = [ti for ti in tis if ti.get("state") == "failed"]
        others = [f"{ti['task_id']}[{ti['map_index']}]={ti.get('state')}" for ti in tis if ti not in failed]
        message = f"Airflow DAG run {run_id} failed"
        if not failed:
            return f"{message}; task states: {', '.join(others)}"
        ti = failed[0]
        where = ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
        try:
            log = self.client.task_log(dag_id, run_id, ti["task_id"], max(ti.get("try_number") or 1, 1),
                                       ti["map_index"])
        except AirflowError as exc:
            log = f"(log not readable: {exc})"
        tail = "\n".join(log.splitlines()[-40:])
        return f"{message}: task {where} failed. Its log ends:\n{tail}"


def _limit(run: Run, default_s: float) -> float:
    remaining = run.remaining_s()
    return default_s if remaining is None else min(default_s, remaining)
