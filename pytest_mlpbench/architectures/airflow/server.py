"""A real Airflow 3 for one test session: api-server, scheduler and
dag-processor with the LocalExecutor, in a temporary AIRFLOW_HOME, bound to
127.0.0.1 on free ports, with authentication on. The components are
supervised: :meth:`AirflowServer.check_alive` says which one died and how, and
:meth:`AirflowServer.restart` starts all three again on the same home."""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

import psutil

from pytest_mlpbench.architectures.airflow.client import AirflowClient, AirflowError, timestamp_ns
from pytest_mlpbench.architectures.base import kill_groups, tail
from pytest_mlpbench.architectures.databases import redact

USER = "mlpbench"

#: SIGTERM grace for what is left of an Airflow whose component died: it is discarded, and
#: a scheduler with a running task takes the whole 10 s of a normal stop to exit.
BROKEN_GRACE_S = 2.0

#: The health report's heartbeat of each component a run needs.
HEARTBEATS = {"scheduler": "latest_scheduler_heartbeat", "dag_processor": "latest_dag_processor_heartbeat"}

#: Settings an Airflow operator tunes for short pipelines; each is documented in docs/airflow.md.
#: ``--mlpbench-framework-defaults=yes`` leaves all of them at Airflow's defaults.
LATENCY_SETTINGS = {
    # Sleep between scheduler loops that found nothing to do (default 1 s): the main
    # source of the gap between one task's end and the next one's queueing.
    "scheduler.scheduler_idle_sleep_time": "0.1",
    # How often the dags folder is listed for new files (default 300 s, checked every 5 s):
    # a DAG written at run time would otherwise not be seen for minutes.
    "dag_processor.refresh_interval": "1",
    "dag_processor.bundle_refresh_check_interval": "1",
    # One parsing process is plenty for a handful of generated DAG files.
    "dag_processor.parsing_processes": "1",
    # A task's supervisor gives up (and the task fails) when the api-server does not answer
    # within 5 s, five times; a busy machine's first answers after start-up can take longer.
    "workers.execution_api_timeout": "30",
}

#: Also tunings: the LocalExecutor forks all its workers up front, one per slot of
#: ``core.parallelism`` (default 32), and 8 are enough for a fan-out on a small machine;
#: one api-server worker (Airflow 3.3's default too; 4 in earlier 3.x).
TUNED_SETTINGS = {"core.parallelism": "8", "api.workers": "1", **LATENCY_SETTINGS}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_settings(text: str) -> dict[str, str]:
    """``section.key=value,...`` (the ``--mlpbench-airflow-config`` syntax)."""
    found = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key.count(".") != 1 or not all(key.split(".")):
            raise ValueError(f"expected section.key=value, got {item!r}")
        found[key.strip().lower()] = value.strip()
    return found


def airflow_env(settings: Mapping[str, str]) -> dict[str, str]:
    return {f"AIRFLOW__{key.replace('.', '__').upper()}": str(value) for key, value in settings.items()}


def exit_status(returncode: int) -> str:
    """``exited with status 1``, ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class ComponentDied(AirflowError):
    """An Airflow component exited while it should have been serving."""

    def __init__(self, component: str, returncode: int, log_tail: str):
        self.summary = f"the Airflow {component} died ({exit_status(returncode)})"
        self.log = f"The end of {component}.log:\n{log_tail}"
        super().__init__(f"{self.summary}. {self.log}")


class AirflowServer:
    """Owns the Airflow processes of one session; :meth:`stop` may be called any number of times."""

    COMPONENTS = ("api-server", "scheduler", "dag-processor")

    def __init__(self, home: Path, db_url: str | None = None, overrides: Mapping[str, str] | None = None,
                 pythonpath: str = "", start_timeout_s: float = 180.0, tuned: bool = True):
        self.home = Path(home)
        self.tuned = tuned  # False: Airflow's defaults wherever running here allows them
        self.db_url = db_url or f"sqlite:///{self.home / 'airflow.db'}"
        self.overrides = dict(overrides or {})
        self.pythonpath = pythonpath
        self.start_timeout_s = start_timeout_s
        self.dags_folder = self.home / "dags"
        self.procs: dict[str, subprocess.Popen] = {}
        self._died: ComponentDied | None = None
        self.port = 0
        self.password = ""
        self.client: AirflowClient | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, str]:
        """The required settings, the tunings unless Airflow's defaults were asked for, then the user's."""
        return {**self.required_settings(), **(TUNED_SETTINGS if self.tuned else {}), **self.overrides}

    def required_settings(self) -> dict[str, str]:
        """What this Airflow needs to run here at all (docs/settings.md says why each)."""
        return {
            "core.executor": "LocalExecutor",
            "core.dags_folder": str(self.dags_folder),
            "core.load_examples": "False",
            "core.dags_are_paused_at_creation": "False",
            "core.execution_api_server_url": f"{self.url}/execution/",
            "core.simple_auth_manager_users": f"{USER}:admin",
            "core.simple_auth_manager_passwords_file": str(self.home / "passwords.json"),
            "database.sql_alchemy_conn": self.db_url,
            "api.host": "127.0.0.1",
            "api.port": str(self.port),
            "api.base_url": self.url,
            "api.expose_config": "False",
            "api.secret_key": self._secret("api_secret"),
            "api_auth.jwt_secret": self._secret("jwt_secret"),
            "logging.base_log_folder": str(self.home / "logs"),
            "logging.worker_log_server_port": str(free_port()),
        }

    def _secret(self, name: str) -> str:
        if not hasattr(self, "_secrets"):
            self._secrets = {}
        return self._secrets.setdefault(name, secrets.token_urlsafe(32))

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        env.update(airflow_env(self.settings()))
        env["AIRFLOW_HOME"] = str(self.home)
        env["PYTHONPATH"] = self.pythonpath
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self) -> None:
        """Migrate the database, start the three components and wait until they are healthy."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.dags_folder.mkdir(exist_ok=True)
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        (self.home / "passwords.json").write_text(json.dumps({USER: self.password}))
        self._migrate(self.env())
        self.client = AirflowClient(self.url, USER, self.password)
        self.launch()

    def launch(self) -> None:
        """Start the three components on the migrated database and wait until they are healthy;
        if they do not, stop them. Port, password and secrets stay those of :meth:`start`, so the
        client keeps working."""
        env = self.env()
        commands = self.commands()
        self._died = None
        launched_ns = time.time_ns()
        try:
            for name in self.COMPONENTS:
                self.procs[name] = self._spawn(name, commands[name], env)
            self._wait_healthy(launched_ns)
        except BaseException:
            self.stop(BROKEN_GRACE_S)
            raise

    def reserialize(self, run) -> None:
        """Have the dags folder parsed into the database now: with Airflow's default
        ``refresh_interval`` (300 s) the dag-processor would list a new file only minutes
        later, and ``airflow dags reserialize`` is how an Airflow user gets it seen at once."""
        run.call([sys.executable, "-m", "airflow", "dags", "reserialize"], cwd=self.home, env=self.env(),
                 log_name="airflow-dags-reserialize")

    def commands(self) -> dict[str, list[str]]:
        """The ``airflow`` command line of each component."""
        return {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port)],  # workers: api.workers
            # The scheduler's log server would listen on every interface (it takes no host); the
            # api-server reads the task logs from the same disk.
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
        }

    def restart(self) -> None:
        """Stop whatever is left of the components and their tasks, then launch all three again."""
        self.stop(BROKEN_GRACE_S)
        self.launch()

    def _spawn(self, name: str, args: list[str], env: dict) -> subprocess.Popen:
        with open(self.home / f"{name}.log", "ab") as log:
            return subprocess.Popen([sys.executable, "-m", "airflow", *args], env=env, cwd=self.home,
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)

    def _migrate(self, env: dict) -> None:
        log = self.home / "db-migrate.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "airflow", "db", "migrate"], env=env, cwd=self.home,
                                    stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
            self.procs["db-migrate"] = proc
            try:
                rc = proc.wait(timeout=self.start_timeout_s)
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                self.procs.pop("db-migrate", None)
                stop_groups([proc])
        if rc != 0:
            raise AirflowError(f"airflow db migrate against {redact(self.db_url)} "
                               f"{'timed out' if rc is None else f'exited {rc}'}:\n{tail(log)}")

    def _wait_healthy(self, since_ns: int) -> None:
        """The metadata database healthy, and the scheduler and dag-processor healthy with a heartbeat
        since ``since_ns``, as the api-server sees them: a killed component's job looks healthy for 30 s."""
        deadline = time.monotonic() + self.start_timeout_s
        health: dict = {}
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                health = self.client.health()
            except AirflowError:
                health = {}
            if health and healthy(health, since_ns):
                self.client.login()
                return
            time.sleep(0.25)
        raise AirflowError(f"Airflow did not become healthy in {self.start_timeout_s:g}s: {health}\n{self.logs_tail()}")

    def death(self) -> ComponentDied | None:
        """The first component found dead since the last launch (remembered after :meth:`stop`), or None."""
        if self._died is None:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    self._died = ComponentDied(name, proc.returncode, tail(self.home / f"{name}.log", 15))
                    break
        return self._died

    def check_alive(self) -> None:
        """Raise :class:`ComponentDied` if a component is dead (see :meth:`death`)."""
        if self.death() is not None:
            raise self._died

    def logs_tail(self, lines: int = 15) -> str:
        return "\n".join(f"--- {name}.log\n{tail(self.home / f'{name}.log', lines)}" for name in self.COMPONENTS)

    def stop(self, grace_s: float = 10.0) -> None:
        """End every component and everything it started. The scheduler may wait for its
        tasks on SIGTERM and task processes run in process groups of their own, so the
        descendants are collected first, signalled too, and killed after the grace period."""
        procs = list(self.procs.values())
        self.procs.clear()
        if procs:
            stop_groups(procs, grace_s)


def healthy(health: dict, since_ns: int) -> bool:
    """The health report says the database is healthy and each component heartbeats since ``since_ns``."""
    if health.get("metadatabase", {}).get("status") != "healthy":
        return False
    return all(health.get(part, {}).get("status") == "healthy"
               and (timestamp_ns(health[part].get(key)) or 0) >= since_ns for part, key in HEARTBEATS.items())


def stop_groups(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """End ``procs`` and their process groups, and their descendants in groups of their own."""
    tree = descendants(procs)
    for child in tree:  # task processes run in process groups of their own
        _terminate(child)
    kill_groups(procs, grace_s)
    for child in tree:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(tree, timeout=5)


def descendants(procs: list[subprocess.Popen]) -> list[psutil.Process]:
    """Everything ``procs`` started: the live ones' descendants, and what a dead one left
    behind. Each of ``procs`` leads a session (``start_new_session``) and Airflow changes
    only process groups, so its processes stay in that session after they are re-parented."""
    sessions = {proc.pid for proc in procs}
    found = {}
    for proc in psutil.process_iter():
        try:
            if proc.pid not in sessions and os.getsid(proc.pid) in sessions:
                found[proc.pid] = proc
        except OSError:
            pass
    for proc in procs:
        if proc.poll() is None:
            try:
                found.update((child.pid, child) for child in psutil.Process(proc.pid).children(recursive=True))
            except psutil.Error:
                pass
    return list(found.values())


def _terminate(proc: psutil.Process) -> None:
    try:
        proc.terminate()
    except psutil.Error:
        pass


