"""``prefect-local``: a real Prefect 3 server, ``process`` work pool and worker,
started once per session (SQLite, or PostgreSQL with ``--mlpbench-prefect-db``).
Each workload becomes a flow (:mod:`.flows`) deployed from local storage to the
pool; a run is a flow run created from that deployment through the REST API,
as ``run_deployment`` does, and picked up by the worker. Per task, queue and
launch delays come from the task run's own state history (Pending, Running,
Completed). Prefect runs in its own virtual environment (``.venv-prefect``):
its pins conflict with Airflow's (docs/prefect.md), so this module drives it
through its CLI and REST API and imports nothing of it.
"""
from __future__ import annotations

import glob
import importlib.metadata
import sys
from pathlib import Path

from pytest_mlpbench.architectures.base import FRAMEWORK_DEFAULTS, Architecture, RunFailed, Unavailable
from pytest_mlpbench.architectures.databases import parse_db, session_database, with_driver
from pytest_mlpbench.architectures.prefect.client import PrefectError
from pytest_mlpbench.architectures.prefect.runs import FlowRunner
from pytest_mlpbench.architectures.prefect.server import ComponentDied, PrefectServer
from pytest_mlpbench.options import Option, existing_dir

__all__ = ["PrefectLocal"]

INSTALL_HINT = ("make install builds it; by hand: python3 -m venv .venv-prefect && .venv-prefect/bin/pip install "
                "-c requirements/prefect-constraints.txt 'prefect>=3'")

DB = Option("prefect_db", "Prefect's database for prefect-local: 'sqlite' (default, a file in the session's "
            "PREFECT_HOME) or postgresql://USER:PASSWORD@HOST:PORT/DB (Prefect's server uses asyncpg).",
            parse_db, None, "URL")
VENV = Option("prefect_venv", "The virtual environment prefect-local runs Prefect's server, worker and flow runs "
              "in (default: .venv-prefect next to the test environment, as make install builds it, else the test "
              "environment itself).", existing_dir, None, "DIR")


def prefect_version(venv: Path) -> str | None:
    """The version of Prefect installed in ``venv``, read from its metadata without running it."""
    paths = glob.glob(str(venv / "lib" / "python3*" / "site-packages"))
    for dist in importlib.metadata.distributions(path=paths):
        if (dist.metadata["Name"] or "").lower() == "prefect":
            return dist.version
    return None


class PrefectLocal(Architecture):
    name = "prefect-local"
    needs_warmup = True  # the first run deploys the flow and imports Prefect in a cold flow-run process
    options = (DB, VENV, FRAMEWORK_DEFAULTS)

    def __init__(self, settings=None):
        super().__init__(settings)
        self.venv: Path | None = None
        self.server: PrefectServer | None = None
        self.runner: FlowRunner | None = None
        self.broken: str | None = None  # why the last run stopped Prefect
        self.unavailable: str | None = None

    def check(self) -> None:
        given = self.option("prefect_venv")
        candidates = [Path(given)] if given else [Path(sys.prefix).with_name(".venv-prefect"), Path(sys.prefix)]
        for venv in candidates:
            version = prefect_version(venv) if (venv / "bin" / "prefect").exists() else None
            if version and int(version.split(".")[0]) >= 3:
                self.venv = venv
                return
            if given:
                found = f"Prefect {version}" if version else "no Prefect"
                raise Unavailable(f"{self.name}: --mlpbench-prefect-venv={given} has {found}; it needs Prefect 3 "
                                  f"and its bin/prefect")
        raise Unavailable(f"{self.name}: no Prefect 3 environment at {candidates[0]}; {INSTALL_HINT}")

    def open(self, session_dir: Path) -> None:
        db = self.option("prefect_db")
        db = db and with_driver(session_database(db, self.name, "Prefect"), "asyncpg")  # its server's only driver
        self.server = PrefectServer(Path(session_dir) / "prefect-home", self.venv / "bin" / "prefect",
                                    db_url=db,
                                    tuned=not self.option("framework_defaults", False))
        try:
            self.server.start()
        except PrefectError as exc:
            self.close()
            raise RuntimeError(f"{self.name}: Prefect did not start: {exc}") from None
        self.runner = FlowRunner(self.server)

    def check_workload(self, workload) -> None:
        # Before a benchmark's runs, outside their timing: a restart here costs no run its time.
        self.ensure_running()

    def run(self, workload, run) -> None:
        self.ensure_running()
        run.logs.extend(self.server.home / f"{c}.log" for c in self.server.COMPONENTS)
        try:
            self.runner.run(workload, run)
        except ComponentDied as death:
            self.server.stop(2.0)
            self.broken = death.summary
            raise RunFailed(f"{self.name}: {death}\nEvery Prefect process was stopped; Prefect is restarted "
                            "before the next run.") from None
        except PrefectError as exc:  # the server refused a request: the run cannot go on
            raise RunFailed(f"{self.name}: {exc}") from None

    def ensure_running(self) -> None:
        """Start Prefect again after a run in which its server or worker died; :class:`Unavailable`
        (for the rest of the session) if it does not come back."""
        if self.unavailable:
            raise Unavailable(self.unavailable)
        if not self.broken:
            return
        try:
            self.server.start()
        except PrefectError as exc:
            self.unavailable = f"{self.name}: Prefect did not restart after {self.broken}: {exc}"
            raise Unavailable(self.unavailable) from None
        self.broken = None

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    def versions(self) -> dict[str, str]:
        found = {"prefect": prefect_version(self.venv) or "?"} if self.venv else {}
        found["prefect-db"] = (self.option("prefect_db") or "sqlite").split(":", 1)[0]
        found["prefect-settings"] = "framework-defaults" if self.option("framework_defaults", False) else "tuned"
        return found

