"""Apache Airflow 3 architectures.

``airflow-local``: a real api-server, scheduler and dag-processor with the
LocalExecutor, started once per session (SQLite, or PostgreSQL with
``--mlpbench-airflow-db``); each workload becomes a TaskFlow DAG triggered
through the REST API. A component that dies fails the run under way at once;
Airflow is restarted before the next run, or the architecture becomes
unavailable with the reason. Files reach the next steps through the run's
shared directory, or, for native hand-off workloads, through Airflow's Object
Storage (see :mod:`.storage`). ``--mlpbench-framework-defaults=yes`` runs
Airflow with its own defaults instead of the tuning in :mod:`.server`.

``airflow-kubernetes``: the same Airflow, with each step a
KubernetesPodOperator task in the cluster of ``--mlpbench-airflow-kube-context``
(shared hand-off only: the pods share a volume).
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

from pytest_mlpbench.architectures.airflow.client import AirflowError
from pytest_mlpbench.architectures.airflow.dags import dag_id, local_dag
from pytest_mlpbench.architectures.airflow.driver import DagDriver
from pytest_mlpbench.architectures.airflow.storage import CARRIED_KEY, STORE_KEY, local_dir, parse_uri
from pytest_mlpbench.architectures.base import (FRAMEWORK_DEFAULTS, Architecture, RunFailed, Unavailable,
                                                step_environment)
from pytest_mlpbench.architectures.databases import parse_db, redact, session_database
from pytest_mlpbench.options import Option
from pytest_mlpbench.architectures.airflow.server import (BROKEN_GRACE_S, AirflowServer, ComponentDied,
                                                          parse_settings)

__all__ = ["AirflowKubernetes", "AirflowLocal"]


DB = Option("airflow_db", "Airflow metadata database for airflow-local/-kubernetes: 'sqlite' (default, a file in the "
            "session's AIRFLOW_HOME) or a SQLAlchemy URL postgresql://USER:PASSWORD@HOST:PORT/DB (needs "
            "psycopg[binary] and asyncpg).", parse_db, None, "URL")
CONFIG = Option("airflow_config", "Extra Airflow settings, comma-separated section.key=value, e.g. "
                "'scheduler.scheduler_idle_sleep_time=1' (they override the tuning and Airflow's defaults alike).",
                parse_settings, None, "SETTINGS")
OBJECT_STORAGE = Option("airflow_object_storage", "Where airflow-local's native hand-off keeps each task's files, "
                        "through Airflow's Object Storage: a URI such as s3://CONN_ID@BUCKET/PREFIX (needs the "
                        "provider and the connection) or file:///PATH (default: a directory in the session's "
                        "scratch space).", parse_uri, None, "URI")


class AirflowLocal(Architecture):
    name = "airflow-local"
    needs_warmup = True  # the first task after start-up is seconds slower
    dag_prefix = "mlpbench"
    options = (DB, CONFIG, OBJECT_STORAGE, FRAMEWORK_DEFAULTS)
    handoff_modes = ("shared", "native")

    def __init__(self, settings=None):
        super().__init__(settings)
        self.server: AirflowServer | None = None
        self.driver: DagDriver | None = None
        self.unavailable: str | None = None  # why Airflow could not be restarted
        self.abandoned: tuple[str, str] | None = None  # (dag id, run id) of the run a dead component ended
        self.object_storage = ""  # the base URI of native hand-off

    def check(self) -> None:
        if importlib.util.find_spec("airflow") is None:
            raise Unavailable(f"{self.name}: apache-airflow is not installed; pip install 'apache-airflow>=3'")
        major = int(importlib.metadata.version("apache-airflow-core").split(".")[0])
        if major < 3:
            raise Unavailable(f"{self.name}: needs Airflow 3 (api-server, dag-processor); found {major}.x")
        db = self.option("airflow_db")
        if db:
            missing = [pip for module, pip in postgres_drivers(db) if importlib.util.find_spec(module) is None]
            if missing:
                raise Unavailable(f"{self.name}: --mlpbench-airflow-db={redact(db)} needs its database drivers: "
                                  f"pip install {' '.join(missing)}")

    def open(self, session_dir: Path) -> None:
        self.object_storage = self.storage_uri(Path(session_dir))
        self.server = self.make_server(Path(session_dir))
        try:
            self.server.start()
        except AirflowError as exc:
            self.close()
            raise RuntimeError(f"{self.name}: Airflow did not start: {exc}") from None
        self.driver = DagDriver(self.server.client, self.server.dags_folder, self.server.check_alive,
                                reparse=None if self.server.tuned else self.server.reserialize)

    def make_server(self, session_dir: Path) -> AirflowServer:
        """The session's Airflow, configured and not yet started."""
        db = self.option("airflow_db")
        db = db and session_database(db, self.name, "Airflow")
        return AirflowServer(session_dir / "airflow-home", db_url=db, overrides=self.option("airflow_config") or {},
                             pythonpath=step_environment(os.devnull)["PYTHONPATH"],
                             tuned=not self.option("framework_defaults", False))

    def storage_uri(self, session_dir: Path) -> str:
        uri = self.option("airflow_object_storage") or f"file://{session_dir / 'object-storage'}"
        directory = local_dir(uri)
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise Unavailable(f"{self.name}: object storage {uri} is not a usable directory: {exc}") from None
        return uri

    def dag_source(self, workload) -> str:
        return local_dag(workload)

    def check_workload(self, workload) -> None:
        # Called before a benchmark's runs and outside their timing: a restart here costs no run its time.
        self.ensure_running()

    def run(self, workload, run) -> None:
        self.ensure_running()
        ident = dag_id(workload, self.dag_prefix)
        run.logs.extend(self.server.home / f"{c}.log" for c in self.server.COMPONENTS)
        try:
            self.driver.ensure_dag(ident, self.dag_source(workload), run)
            self.driver.run(ident, run, self.handoff_conf(run))
        except ComponentDied as death:
            self.server.stop(BROKEN_GRACE_S)
            self.abandoned = (ident, run.spec.run_id)
            raise RunFailed(f"{self.name}: {death.summary} during the run; every Airflow process was stopped "
                            f"and Airflow is restarted before the next run. {death.log}") from None

    def handoff_conf(self, run) -> dict:
        """What a native run's tasks need to carry their files through Object Storage (see :mod:`.storage`)."""
        if run.spec.handoff != "native":
            return {}
        return {STORE_KEY: self.object_storage, CARRIED_KEY: str(run.dir / "carried")}

    def ensure_running(self) -> None:
        """Restart Airflow if a component died since the last run; :class:`Unavailable`
        (for the rest of the session) if it does not come back."""
        if self.unavailable:
            raise Unavailable(self.unavailable)
        death = self.server.death()
        if death is None:
            return
        try:
            self.server.restart()
        except AirflowError as exc:
            self.unavailable = f"{self.name}: Airflow did not restart after {death.summary}: {exc}"
            raise Unavailable(self.unavailable) from None
        if self.abandoned:
            # The new scheduler would otherwise run the abandoned run's tasks again.
            self.driver.fail_quietly(*self.abandoned)
            self.abandoned = None

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    def versions(self) -> dict[str, str]:
        found = {}
        for dist in ("apache-airflow", "apache-airflow-core", "apache-airflow-task-sdk",
                     "apache-airflow-providers-cncf-kubernetes"):
            try:
                found[dist] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                pass
        db = self.option("airflow_db") or "sqlite"
        found["airflow-db"] = db.split(":", 1)[0]
        # Which settings the runs measured: tuned for short pipelines, or Airflow's own defaults.
        found["airflow-settings"] = "framework-defaults" if self.option("framework_defaults", False) else "tuned"
        return found


def postgres_drivers(url: str) -> list[tuple[str, str]]:
    """(module, pip requirement) of the drivers Airflow uses for ``url``: SQLAlchemy's
    for the URL's dialect (psycopg 3 for plain postgresql:// since SQLAlchemy 2.1) and
    asyncpg for the api-server's async engine."""
    driver = url.split("://", 1)[0].partition("+")[2] or "psycopg"
    sync = {"psycopg": ("psycopg", "'psycopg[binary]'"), "psycopg2": ("psycopg2", "psycopg2-binary")}
    return [sync.get(driver, (driver, driver)), ("asyncpg", "asyncpg")]


from pytest_mlpbench.architectures.airflow.kubernetes import AirflowKubernetes  # noqa: E402  (subclass of AirflowLocal)
