"""A real Dagster deployment for one test session, laid out as Dagster's guide
to running it as a service describes: a DAGSTER_HOME with ``dagster.yaml``
(SQLite storage in the home, or PostgreSQL; the QueuedRunCoordinator), a code
server (``dagster code-server start``) serving the generated code location, a
``dagster-webserver`` whose GraphQL API launches the runs, and the
``dagster-daemon`` that dequeues them and starts each run's worker through the
code server (DefaultRunLauncher). Everything binds to 127.0.0.1 on free ports.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil

from pytest_mlpbench.architectures.base import kill_groups, tail
from pytest_mlpbench.architectures.subprocesses import exit_reason
from pytest_mlpbench.architectures.dagster.client import DagsterClient, DagsterError, jobs_of
from pytest_mlpbench.architectures.dagster.jobs import DEFINITIONS

LOCATION = "mlpbench"

#: The tuning for short pipelines (docs/settings.md): the daemon looks at the run queue every
#: second instead of every 5 s, the smallest interval the setting takes (whole seconds).
TUNED_COORDINATOR = {"dequeue_interval_seconds": 1}

#: SIGTERM grace for what is left of a deployment whose component died.
BROKEN_GRACE_S = 2.0


class ComponentDied(DagsterError):
    def __init__(self, name: str, code: int | None, log_tail: str):
        self.summary = f"the Dagster {name} died ({exit_reason(code)})"
        self.log = f"The end of {name}.log:\n{log_tail}"
        super().__init__(f"{self.summary}. {self.log}")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DagsterDeployment:
    COMPONENTS = ("code-server", "webserver", "daemon")

    def __init__(self, home: Path, *, db_url: str | None = None, pythonpath: str = "", tuned: bool = True,
                 start_timeout_s: float = 180.0):
        self.home = Path(home)
        self.code = self.home / "code"  # the code location: definitions.py and a file per workload
        self.db_url = db_url
        self.pythonpath = pythonpath
        self.tuned = tuned
        self.start_timeout_s = start_timeout_s
        self.procs: dict[str, subprocess.Popen] = {}
        self._died: ComponentDied | None = None
        self.port = self.grpc_port = 0
        self.client: DagsterClient | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def instance_config(self) -> dict:
        """``dagster.yaml``: what this deployment needs here, and the tuning unless Dagster's defaults were asked for."""
        if self.db_url:
            storage = {"postgres": {"postgres_url": self.db_url}}
        else:
            storage = {"sqlite": {"base_dir": str(self.home / "storage")}}
        return {
            "storage": storage,
            "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator",
                                "config": dict(TUNED_COORDINATOR) if self.tuned else {}},
            "run_launcher": {"module": "dagster.core.launcher", "class": "DefaultRunLauncher"},
            "local_artifact_storage": {"module": "dagster.core.storage.root", "class": "LocalArtifactStorage",
                                       "config": {"base_dir": str(self.home)}},
            "telemetry": {"enabled": False},  # nothing leaves this machine
        }

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
        env.update(DAGSTER_HOME=str(self.home), PYTHONPATH=self.pythonpath, PYTHONUNBUFFERED="1")
        return env

    def commands(self) -> dict[str, list[str]]:
        bin_dir = Path(sys.executable).parent
        workspace = str(self.home / "workspace.yaml")
        return {
            "code-server": [str(bin_dir / "dagster"), "code-server", "start", "-h", "127.0.0.1",
                            "-p", str(self.grpc_port), "-f", str(self.code / "definitions.py"),
                            "--location-name", LOCATION, "--use-python-environment-entry-point"],
            "webserver": [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(self.port),
                          "-w", workspace],
            "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", workspace],
        }

    def start(self) -> None:
        self.code.mkdir(parents=True, exist_ok=True)
        # JSON is YAML: no YAML writer needed.
        (self.home / "dagster.yaml").write_text(json.dumps(self.instance_config(), indent=2))
        (self.code / "definitions.py").write_text(DEFINITIONS)
        self.port = free_port()
        self.grpc_port = free_port()
        while self.grpc_port == self.port:
            self.grpc_port = free_port()
        workspace = {"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": self.grpc_port,
                                                    "location_name": LOCATION}}]}
        (self.home / "workspace.yaml").write_text(json.dumps(workspace, indent=2))
        self.client = DagsterClient(self.url)
        self._migrate()
        self.launch()

    def _migrate(self) -> None:
        """Create the storage once, before the three components open it at the same time
        (SQLite schemas stamped by two of them at once end with two alembic heads)."""
        log = self.home / "instance-migrate.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([str(Path(sys.executable).parent / "dagster"), "instance", "migrate"],
                                    env=self.env(), cwd=self.home, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
            self.procs["instance-migrate"] = proc
            try:
                rc = proc.wait(timeout=self.start_timeout_s)
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                self.procs.pop("instance-migrate", None)
                stop_groups([proc], BROKEN_GRACE_S)
        if rc != 0:
            raise DagsterError(f"dagster instance migrate {'timed out' if rc is None else f'exited {rc}'}:\n{tail(log)}")

    def launch(self) -> None:
        """Start the three components and wait until the location is loaded and the run queue's daemon heartbeats."""
        env, commands = self.env(), self.commands()
        self._died = None
        launched = time.time()
        try:
            for name in self.COMPONENTS:
                with open(self.home / f"{name}.log", "ab") as log:
                    self.procs[name] = subprocess.Popen(commands[name], env=env, cwd=self.home, stdout=log,
                                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                        start_new_session=True)
                if name == "code-server":
                    # The webserver and the daemon load the location once at start: it must answer by then
                    # (it answers once its code is loaded).
                    self._wait_port(self.grpc_port)
            self._wait_ready(launched)
        except BaseException:
            self.stop(BROKEN_GRACE_S)
            raise

    def _wait_port(self, port: int) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            with socket.socket() as s:
                s.settimeout(1.0)
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise DagsterError(f"the code server did not listen on port {port} in {self.start_timeout_s:g}s\n"
                           f"{self.logs_tail()}")

    def _wait_ready(self, since: float) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        state = "the webserver did not answer"
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                entry = self.client.location(LOCATION)
                queue = self.client.daemons().get("QUEUED_RUN_COORDINATOR", {})
            except DagsterError as exc:
                state = f"the webserver did not answer: {exc}"
            else:
                loaded = entry and entry["loadStatus"] == "LOADED"
                error = entry and entry["locationOrLoadError"] and entry["locationOrLoadError"].get("message")
                if error:
                    raise DagsterError(f"the code location did not load: {error}")
                if loaded and queue.get("healthy") and (queue.get("lastHeartbeatTime") or 0) >= since:
                    return
                state = f"code location {entry and entry['loadStatus']}, run queue daemon {queue or 'not seen'}"
            time.sleep(0.25)
        raise DagsterError(f"Dagster was not ready in {self.start_timeout_s:g}s: {state}\n{self.logs_tail()}")

    def add_job(self, name: str, source: str, timeout_s: float = 120.0) -> None:
        """Write the generated module of job ``name`` into the code location, reload the location
        on its server and wait until the webserver lists the job."""
        path = self.code / f"{name}.py"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(source)
        tmp.replace(path)
        deadline = time.monotonic() + timeout_s
        reloaded, location = False, {}
        while time.monotonic() < deadline:
            self.check_alive()
            try:
                if not reloaded:
                    self.client.reload(LOCATION)
                    reloaded = True
                entry = self.client.location(LOCATION) or {}
            except DagsterError as exc:
                # A slow answer, or one that raced the location's swap in the webserver: ask again.
                location = {"message": str(exc)}
                time.sleep(0.2)
                continue
            location = entry.get("locationOrLoadError") or {}
            if location.get("__typename") == "PythonError" and entry.get("loadStatus") == "LOADED":
                raise DagsterError(f"the code location did not load with {path.name}:\n{location.get('message')}",
                                   200)
            if name in jobs_of(location):
                return
            time.sleep(0.2)
        raise DagsterError(f"the webserver did not list job {name} within {timeout_s:g}s of reloading the code "
                           f"location: {location}\n{self.logs_tail()}")

    def death(self) -> ComponentDied | None:
        """The first component found dead since the last launch (kept after :meth:`stop`), or None."""
        if self._died is None:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    self._died = ComponentDied(name, proc.returncode, tail(self.home / f"{name}.log", 15))
                    break
        return self._died

    def check_alive(self) -> None:
        if self.death() is not None:
            raise self._died

    def logs_tail(self, lines: int = 15) -> str:
        return "\n".join(f"--- {name}.log\n{tail(self.home / f'{name}.log', lines)}" for name in self.COMPONENTS)

    def restart(self) -> None:
        self.stop(BROKEN_GRACE_S)
        self.launch()

    def stop(self, grace_s: float = 10.0) -> None:
        """End every component and everything it started (run workers and op processes included)."""
        procs = list(self.procs.values())
        self.procs.clear()
        if procs:
            stop_groups(procs, grace_s)


def stop_groups(procs: list[subprocess.Popen], grace_s: float) -> None:
    tree = descendants(procs)
    for child in tree:
        _signal(child, "terminate")
    kill_groups(procs, grace_s)
    end_tree(tree, grace_s=0)


def end_tree(tree: list[psutil.Process], grace_s: float = 3.0) -> None:
    """SIGTERM, then after ``grace_s`` SIGKILL, each of ``tree``; wait for them."""
    if grace_s:
        for proc in tree:
            _signal(proc, "terminate")
        _gone, tree = psutil.wait_procs(tree, timeout=grace_s)
    for proc in tree:
        _signal(proc, "kill")
    psutil.wait_procs(tree, timeout=5)


def descendants(procs: list[subprocess.Popen]) -> list[psutil.Process]:
    """Everything ``procs`` started, also what was re-parented: each of ``procs`` leads a
    session (``start_new_session``) that its children stay in, and the live ones' children."""
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


def _signal(proc: psutil.Process, how: str) -> None:
    try:
        getattr(proc, how)()
    except psutil.Error:
        pass
