"""The architecture interface and the per-run handle architectures work with."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

from pytest_mlpbench.model.workload import RunSpec, Workload
from pytest_mlpbench.options import Option, positive_float, yes_no
from pytest_mlpbench.step.events import EVENTS_ENV


class Unavailable(Exception):
    """The architecture cannot run here; the message says why and what to set."""


class RunFailed(Exception):
    """The architecture ran the workload and it failed; the message has the framework's error."""


class RunTimeout(RunFailed):
    """The run exceeded ``--mlpbench-timeout`` and its processes were killed."""


T = TypeVar("T")

REMOTE_POLL = Option("remote_poll", "Seconds between status polls of a kubeflow or sagemaker run (default: 2).",
                     positive_float, 2.0, "SECONDS")
FRAMEWORK_DEFAULTS = Option(
    "framework_defaults", "Run the frameworks that take this option (airflow-local, airflow-kubernetes, "
    "prefect-local, dagster-local) with their own default settings instead of the tuning pytest-mlpbench applies for short "
    "pipelines; what they need to run here at all stays set (docs/settings.md) (default: no).",
    yes_no, False, "yes|no")


class Architecture:
    """Turns a workload into one framework's pipeline and runs it once per call.

    ``check`` raises :class:`Unavailable` to skip; ``open`` starts what lives
    for the session; ``run`` blocks until the pipeline ends and raises
    :class:`RunFailed` if it failed; ``close`` stops everything and may be
    called more than once.
    """

    name: ClassVar[str] = ""
    #: Framework metadata makes the first run after ``open`` unrepresentative
    #: (Airflow's first task is seconds slower): run one unrecorded run first.
    needs_warmup: ClassVar[bool] = False
    #: The options of this architecture (``--mlpbench-NAME`` and ini ``mlpbench_NAME``);
    #: their values reach ``self.settings`` by name.
    options: ClassVar[Sequence[Option]] = ()
    #: The values of ``RunSpec.handoff`` that ``run`` carries files in
    #: (see :mod:`pytest_mlpbench.step.handoff`).
    handoff_modes: ClassVar[tuple[str, ...]] = ("shared",)
    #: Files cross between tasks through the framework's own data layer even in
    #: ``shared`` mode (SageMaker's channels, which mount them at the same paths).
    shared_is_native: ClassVar[bool] = False

    def __init__(self, settings: Any = None):
        self.settings = settings

    def option(self, name: str, default=None):
        """The value of one of this architecture's options (``default`` without settings)."""
        return self.settings.get(name, default) if self.settings is not None else default

    def check(self) -> None:
        pass

    def check_workload(self, workload: Workload) -> None:
        """Raise :class:`Unavailable` if this architecture cannot run ``workload``."""

    def handoff(self, workload: Workload) -> str:
        """The ``RunSpec.handoff`` to run ``workload`` with; :class:`Unavailable` if it cannot."""
        if workload.handoff in self.handoff_modes:
            return workload.handoff
        if workload.handoff == "native" and self.shared_is_native:
            return "shared"
        raise Unavailable(f"{self.name}: carries files between steps only as {' or '.join(self.handoff_modes)}, "
                          f"and workload {workload.name!r} asks for {workload.handoff!r} hand-off")

    def handoff_used(self, mode: str) -> str:
        """How files really travelled in a run with ``RunSpec.handoff == mode`` (for its record)."""
        return "native" if self.shared_is_native else mode

    def open(self, session_dir: Path) -> None:
        pass

    def run(self, workload: Workload, run: "Run") -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def versions(self) -> dict[str, str]:
        """Versions of the framework packages this architecture runs on."""
        return {}

    def watch_pids(self) -> list[int]:
        """Processes outside the test's own tree whose descendants run this
        architecture's work (a container engine's), for the monitor to watch."""
        return []

    def watch_cgroups(self, run_id: str) -> list[str]:
        """Cgroups, made for this run alone, that its containers will run
        under (paths as an engine's ``cgroup_parent`` takes them)."""
        return []


def step_environment(events_path: str | os.PathLike, traceparent: str | None = None) -> dict[str, str]:
    """Variables a step process needs: the event sink, an import path that finds
    the workloads the test process imported, and the trace context."""
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    env = {EVENTS_ENV: str(events_path), "PYTHONPATH": os.pathsep.join(dict.fromkeys(paths))}
    if traceparent:
        env["TRACEPARENT"] = traceparent
    return env


@dataclass
class Run:
    """One run of a workload on an architecture, as the architecture sees it."""

    spec: RunSpec
    workload: Workload
    dir: Path
    timeout_s: float | None = None
    started: float = field(default_factory=time.monotonic)
    #: Framework metadata per task, keyed ``(step, index)``: ``created_ns``,
    #: ``queued_ns``, ``started_ns``, ``finished_ns`` (wall-clock ns) and any
    #: other figure the framework knows.
    task_info: dict[tuple[str, int | None], dict[str, Any]] = field(default_factory=dict)
    #: Where the architecture wrote the framework's own logs for this run.
    logs: list[Path] = field(default_factory=list)

    @property
    def artifacts(self) -> Path:
        return Path(self.spec.artifacts)

    @property
    def env(self) -> dict[str, str]:
        return step_environment(self.spec.events, self.spec.traceparent)

    def remaining_s(self) -> float | None:
        if self.timeout_s is None:
            return None
        return max(0.0, self.timeout_s - (time.monotonic() - self.started))

    def add_task_info(self, step: str, index: int | None, **info: Any) -> None:
        self.task_info.setdefault((step, index), {}).update(info)

    def call(
        self,
        cmd: Sequence[str],
        *,
        cwd: str | os.PathLike | None = None,
        env: Mapping[str, str] | None = None,
        log_name: str | None = None,
    ) -> None:
        """Run a command to completion under the run's deadline.

        The command gets its own process group; on timeout or interruption the
        whole group is killed. Output goes to a log file under the run's
        directory; a non-zero exit raises :class:`RunFailed` with its tail.
        """
        proc = self.start(cmd, cwd=cwd, env=env, log_name=log_name)
        self.wait(proc)

    def start(self, cmd, *, cwd=None, env=None, log_name=None) -> subprocess.Popen:
        log = self.dir / f"{log_name or Path(cmd[0]).name}.log"
        self.logs.append(log)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                list(cmd),
                cwd=cwd,
                env={**os.environ, **self.env, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc.log = log  # type: ignore[attr-defined]
        return proc

    def wait(self, proc: subprocess.Popen) -> None:
        try:
            rc = proc.wait(timeout=self.remaining_s())
        except subprocess.TimeoutExpired:
            kill_group(proc)
            raise RunTimeout(f"run exceeded --mlpbench-timeout={self.timeout_s:g}s; killed {proc.args[0]}") from None
        except BaseException:
            kill_group(proc)
            raise
        if rc != 0:
            raise RunFailed(f"{' '.join(map(str, proc.args[:3]))}... exited {rc}:\n{tail(proc.log)}")


def kill_group(proc: subprocess.Popen, grace_s: float = 3.0) -> None:
    """End a process started with ``start_new_session`` and everything in its group."""
    kill_groups([proc], grace_s)


def kill_groups(procs: Sequence[subprocess.Popen], grace_s: float = 3.0) -> None:
    """SIGTERM the process group of each of ``procs`` (each started with
    ``start_new_session``), wait up to ``grace_s`` for the leaders, then SIGKILL
    what is left of the groups, stragglers of exited leaders included."""
    for proc in procs:
        _kill_pgid(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for proc in procs:
        _kill_pgid(proc.pid, signal.SIGKILL)
        proc.wait()


def _kill_pgid(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def poll_until(done: Callable[[], T | None], run: "Run | None", interval_s: float,
               stop: Callable[[], Any] | None = None, what: str | Callable[[], str] = "") -> T:
    """Call ``done`` every ``interval_s`` until it returns something other than
    None, and return that. At the run's deadline, and on Ctrl-C, ``stop`` ends
    the work first; the deadline raises :class:`RunTimeout` saying ``what`` was done."""
    try:
        while True:
            result = done()
            if result is not None:
                return result
            remaining = run.remaining_s() if run else None
            if remaining == 0:
                if stop:
                    stop()
                said = what() if callable(what) else what
                raise RunTimeout(f"run exceeded --mlpbench-timeout={run.timeout_s:g}s; {said}")
            time.sleep(interval_s if remaining is None else min(interval_s, remaining))
    except KeyboardInterrupt:
        if stop:
            stop()
        raise


def tail(path: str | os.PathLike, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
