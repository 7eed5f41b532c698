"""A real Airflow 3 for one test session: api-server, scheduler and
dag-processor with the LocalExecutor, in a temporary AIRFLOW_HOME, bound to
127.0.0.1 on free ports, with authentication on."""
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

from ..base import tail
from .client import AirflowClient, AirflowError

USER = "mlpbench"

#: Settings an Airflow operator tunes for short pipelines; each is documented in docs/airflow.md.
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


class AirflowServer:
    """Owns the Airflow processes of one session; :meth:`stop` may be called any number of times."""

    COMPONENTS = ("api-server", "scheduler", "dag-processor")

    def __init__(self, home: Path, db_url: str | None = None, overrides: Mapping[str, str] | None = None,
                 pythonpath: str = "", start_timeout_s: float = 180.0):
        self.home = Path(home)
        self.db_url = db_url or f"sqlite:///{self.home / 'airflow.db'}"
        self.overrides = dict(overrides or {})
        self.pythonpath = pythonpath
        self.start_timeout_s = start_timeout_s
        self.dags_folder = self.home / "dags"
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = 0
        self.password = ""
        self.client: AirflowClient | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def settings(self) -> dict[str, str]:
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
            "api.workers": "1",
            "api.expose_config": "False",
            "api.secret_key": self._secret("api_secret"),
            "api_auth.jwt_secret": self._secret("jwt_secret"),
            "logging.base_log_folder": str(self.home / "logs"),
            "logging.worker_log_server_port": str(free_port()),
            # LocalExecutor workers are started up front: enough for a fan-out on a small machine.
            "core.parallelism": "8",
            **LATENCY_SETTINGS,
            **self.overrides,
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
        env = self.env()
        self._migrate(env)
        commands = {
            "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            "scheduler": ["scheduler", "--skip-serve-logs"],
            "dag-processor": ["dag-processor"],
        }
        for name in self.COMPONENTS:
            self.procs[name] = self._spawn(name, commands[name], env)
        self.client = AirflowClient(self.url, USER, self.password)
        self._wait_healthy()

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

    def _wait_healthy(self) -> None:
        """Health of the metadata database, scheduler and dag-processor as the api-server sees them."""
        deadline = time.monotonic() + self.start_timeout_s
        health: dict = {}
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                health = self.client.health()
            except AirflowError:
                health = {}
            parts = ("metadatabase", "scheduler", "dag_processor")
            if health and all(health.get(p, {}).get("status") == "healthy" for p in parts):
                self.client.login()
                return
            time.sleep(0.25)
        raise AirflowError(f"Airflow did not become healthy in {self.start_timeout_s:g}s: {health}\n{self.logs_tail()}")

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AirflowError(f"airflow {name} exited {proc.returncode}:\n{tail(self.home / f'{name}.log')}")

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


def stop_groups(procs: list[subprocess.Popen], grace_s: float = 10.0) -> None:
    """SIGTERM the process groups of ``procs``, SIGKILL what is left after ``grace_s``."""
    tree = []
    for proc in procs:
        try:
            tree += psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            pass
    for proc in procs:
        _signal_group(proc.pid, signal.SIGTERM)
    for child in tree:  # task processes run in process groups of their own
        _terminate(child)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()
    for child in tree:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(tree, timeout=5)


def _terminate(proc: psutil.Process) -> None:
    try:
        proc.terminate()
    except psutil.Error:
        pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def redact(url: str) -> str:
    """A database URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not sep or not at or ":" not in creds:
        return url
    return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
