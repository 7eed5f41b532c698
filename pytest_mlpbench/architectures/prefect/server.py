"""A real Prefect 3 for one test session: ``prefect server start`` (API, UI off,
and the server's services) on 127.0.0.1 and a free port with a basic auth
string, a ``process`` work pool, and ``prefect worker start`` polling it; all
with PREFECT_HOME and the database (SQLite by default) in the session's
directory, and all run by the Python of Prefect's own environment."""
from __future__ import annotations

import os
import secrets
import subprocess
import time
from pathlib import Path

from pytest_mlpbench.architectures.airflow.server import exit_status, free_port, stop_groups
from pytest_mlpbench.architectures.base import tail
from pytest_mlpbench.architectures.prefect.client import PrefectClient, PrefectError

POOL = "mlpbench"

#: Settings a Prefect operator tunes for short pipelines (docs/settings.md);
#: ``--mlpbench-framework-defaults=yes`` leaves them at Prefect's defaults.
TUNED_SETTINGS = {
    # How often the worker asks for scheduled flow runs (default 10 s): a triggered run
    # otherwise waits 5 s on average before the worker even sees it.
    "PREFECT_WORKER_QUERY_SECONDS": "0.2",
}


class ComponentDied(PrefectError):
    """The Prefect server or worker exited while it should have been serving."""

    def __init__(self, component: str, returncode: int, log_tail: str):
        self.summary = f"the Prefect {component} died ({exit_status(returncode)})"
        super().__init__(f"{self.summary}. The end of {component}.log:\n{log_tail}")


class PrefectServer:
    """Owns the Prefect processes of one session; :meth:`stop` may be called any number of times."""

    COMPONENTS = ("server", "worker")

    def __init__(self, home: Path, prefect: Path, db_url: str | None = None, tuned: bool = True,
                 start_timeout_s: float = 180.0):
        self.home = Path(home)
        self.prefect = Path(prefect)  # the ``prefect`` command of Prefect's environment
        self.db_url = db_url or f"sqlite+aiosqlite:///{self.home / 'prefect.db'}"
        self.tuned = tuned
        self.start_timeout_s = start_timeout_s
        self.procs: dict[str, subprocess.Popen] = {}
        self.port = 0
        self.auth = ""
        self.client: PrefectClient | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def settings(self) -> dict[str, str]:
        """What Prefect needs to run here (docs/settings.md says why each), then the tunings."""
        required = {
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.url,
            "PREFECT_SERVER_API_HOST": "127.0.0.1",
            "PREFECT_SERVER_API_PORT": str(self.port),
            "PREFECT_API_DATABASE_CONNECTION_URL": self.db_url,
            "PREFECT_SERVER_API_AUTH_STRING": self.auth,
            "PREFECT_API_AUTH_STRING": self.auth,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_ENABLED": "false",
        }
        return {**required, **(TUNED_SETTINGS if self.tuned else {})}

    def env(self) -> dict[str, str]:
        """The session's environment without the test environment's Python path or Prefect settings."""
        drop = ("PREFECT_", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env["PATH"] = os.pathsep.join([str(self.prefect.parent), env.get("PATH", "")])
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.settings())
        return env

    def start(self) -> None:
        """Start the server, then the worker, which makes its ``process`` work pool (as
        ``prefect work-pool create`` would, with the pool type's default job template); wait
        until it polls."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.auth = f"mlpbench:{secrets.token_urlsafe(16)}"
        self.client = PrefectClient(self.url, self.auth)
        try:
            self._spawn("server", ["server", "start", "--host", "127.0.0.1", "--port", str(self.port)])
            self._wait(self.client.healthy, "the server to answer")
            self._spawn("worker", ["worker", "start", "--pool", POOL, "--type", "process", "--name", "mlpbench"])
            self._wait(self._worker_online, "the worker to poll its work pool")
        except BaseException:
            self.stop(2.0)
            raise

    def _worker_online(self) -> bool:
        try:
            workers = self.client.api("POST", f"/work_pools/{POOL}/workers/filter", {})
        except PrefectError:
            return False
        return any(w.get("status") == "ONLINE" for w in workers)

    def call(self, args: list[str], log_name: str, cwd: Path | None = None, timeout_s: float | None = None) -> None:
        """Run a ``prefect`` command (or, with a path to a script first, Prefect's Python) to completion."""
        log = self.home / f"{log_name}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(self._command(args), cwd=cwd or self.home, env=self.env(), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            self.procs[log_name] = proc
            try:
                rc = proc.wait(timeout=timeout_s or self.start_timeout_s)
            except subprocess.TimeoutExpired:
                rc = None
            finally:
                self.procs.pop(log_name, None)
                stop_groups([proc], 2.0)
        if rc != 0:
            raise PrefectError(f"prefect {' '.join(args[:2])} {'timed out' if rc is None else f'exited {rc}'}:\n"
                               f"{tail(log)}")

    def _command(self, args: list[str]) -> list[str]:
        if args and args[0].endswith(".py"):
            return [str(self.prefect.with_name("python")), *args]
        return [str(self.prefect), *args]

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.home / f"{name}.log", "ab") as log:
            self.procs[name] = subprocess.Popen(self._command(args), env=self.env(), cwd=self.home, stdout=log,
                                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                                start_new_session=True)

    def _wait(self, ready, what: str) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            self.check_alive()
            if ready():
                return
            time.sleep(0.2)
        raise PrefectError(f"Prefect did not start: no {what} in {self.start_timeout_s:g}s\n{self.logs_tail()}")

    def check_alive(self) -> None:
        """Raise :class:`ComponentDied` if the server or the worker exited."""
        for name in self.COMPONENTS:
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise ComponentDied(name, proc.returncode, tail(self.home / f"{name}.log", 15))

    def logs_tail(self, lines: int = 15) -> str:
        return "\n".join(f"--- {name}.log\n{tail(self.home / f'{name}.log', lines)}" for name in self.COMPONENTS)

    def stop_flow_runs(self, grace_s: float = 2.0) -> None:
        """End every flow-run process of the worker (and its step processes); the worker stays."""
        import psutil

        worker = self.procs.get("worker")
        if worker is None or worker.poll() is not None:
            return
        try:
            children = psutil.Process(worker.pid).children()
        except psutil.Error:
            return
        tree = []
        for child in children:
            try:
                tree += [child, *child.children(recursive=True)]
            except psutil.Error:
                pass
        for proc in tree:
            try:
                proc.terminate()
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(tree, timeout=grace_s)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)

    def stop(self, grace_s: float = 10.0) -> None:
        """End the worker (and the flow runs it started), then the server."""
        for name in ("worker", *[n for n in self.procs if n not in self.COMPONENTS], "server"):
            proc = self.procs.pop(name, None)
            if proc is not None:
                stop_groups([proc], grace_s)

