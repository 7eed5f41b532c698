"""Apache Airflow 3 architectures.

``airflow-local``: a real api-server, scheduler and dag-processor with the
LocalExecutor, started once per session (SQLite, or PostgreSQL with
``--mlpbench-airflow-db``); each workload becomes a TaskFlow DAG triggered
through the REST API.

``airflow-kubernetes``: the same Airflow, with each step a
KubernetesPodOperator task in the cluster of ``--mlpbench-airflow-kube-context``.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path

from ..base import Architecture, Unavailable, step_environment
from .client import AirflowError
from .dags import dag_id, local_dag
from .driver import DagDriver
from .server import AirflowServer, redact

__all__ = ["AirflowKubernetes", "AirflowLocal"]


class AirflowLocal(Architecture):
    name = "airflow-local"
    needs_warmup = True  # the first task after start-up is seconds slower

    def __init__(self, options=None):
        super().__init__(options)
        self.server: AirflowServer | None = None
        self.driver: DagDriver | None = None

    def option(self, name: str, default=None):
        return self.options.get(name, default) if self.options is not None else default

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
        pythonpath = step_environment(os.devnull)["PYTHONPATH"]
        self.server = AirflowServer(Path(session_dir) / "airflow-home", db_url=self.option("airflow_db"),
                                    overrides=self.option("airflow_config") or {}, pythonpath=pythonpath)
        try:
            self.server.start()
        except AirflowError as exc:
            self.close()
            raise RuntimeError(f"{self.name}: Airflow did not start: {exc}") from None
        self.driver = DagDriver(self.server.client, self.server.dags_folder)

    def dag_source(self, workload) -> str:
        return local_dag(workload)

    def run(self, workload, run) -> None:
        ident = dag_id(workload)
        run.logs.extend(self.server.home / f"{c}.log" for c in self.server.COMPONENTS)
        self.driver.ensure_dag(ident, self.dag_source(workload), run)
        self.driver.run(ident, run)

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
        return found


def postgres_drivers(url: str) -> list[tuple[str, str]]:
    """(module, pip requirement) of the drivers Airflow uses for ``url``: SQLAlchemy's
    for the URL's dialect (psycopg 3 for plain postgresql:// since SQLAlchemy 2.1) and
    asyncpg for the api-server's async engine."""
    driver = url.split("://", 1)[0].partition("+")[2] or "psycopg"
    sync = {"psycopg": ("psycopg", "'psycopg[binary]'"), "psycopg2": ("psycopg2", "psycopg2-binary")}
    return [sync.get(driver, (driver, driver)), ("asyncpg", "asyncpg")]


from .kubernetes import AirflowKubernetes  # noqa: E402  (subclass of AirflowLocal)
