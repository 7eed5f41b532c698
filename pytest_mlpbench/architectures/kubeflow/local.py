"""Kubeflow Pipelines: ``kubeflow-local`` runs the workload's KFP pipeline with
kfp.local's SubprocessRunner (one Python process per task, in this venv);
``kubeflow`` compiles it to IR YAML and submits it to a KFP endpoint.

In native hand-off (``kubeflow-local`` and ``kubeflow-docker``) the steps'
files travel as KFP artifacts (see :mod:`.pipeline`), which kfp.local keeps
under the run's pipeline root, ``<run dir>/kfp``: there each task's output
artifact ``artifacts`` is the directory it wrote, and a consumer reads its
input artifacts' paths there. ``kubeflow`` (a cluster) carries files only
through the shared directory its pods mount."""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil

from pytest_mlpbench.step.events import read_events
from pytest_mlpbench.architectures.base import (REMOTE_POLL, Architecture, RunFailed, RunTimeout, Unavailable,
                                                poll_until, tail)
from pytest_mlpbench.architectures.subprocesses import task_failure
from pytest_mlpbench.options import Option
from pytest_mlpbench.step.params import to_param

ANSI = re.compile(r"\x1b\[[0-9;]*m")  # kfp.local colours its messages
#: How long to keep killing the tasks of a timed-out run before giving up on it.
STOP_GRACE_S = 30.0


def kfp_versions() -> dict[str, str]:
    import kfp

    return {"kfp": kfp.__version__}


HOST = Option("kubeflow_host", "KFP API endpoint for the kubeflow architecture, e.g. http://127.0.0.1:8888 (default: "
              "$KF_PIPELINES_ENDPOINT; without one, kubeflow is skipped).", str, None, "URL")
IMAGE = Option("kubeflow_image", "Container image of the kubeflow tasks; it must have pytest-mlpbench and the "
               "workloads installed (required for kubeflow).", str, None, "IMAGE")
ARTIFACTS = Option("kubeflow_artifacts", "Directory that every kubeflow task pod mounts, for the workloads' "
                   "artifacts (required for kubeflow).", str, None, "DIR")
NAMESPACE = Option("kubeflow_namespace", "Kubernetes namespace of the KFP runs (default: kubeflow).",
                   str, None, "NAME")
EXPERIMENT = Option("kubeflow_experiment", "KFP experiment of the runs (default: mlpbench).", str, "mlpbench", "NAME")


class _Pipelines:
    """The KFP pipeline of each workload, built once per session."""

    def __init__(self, image: str | None = None):
        self.image = image
        self._built: dict = {}

    def get(self, workload, native: bool = False):
        from pytest_mlpbench.model.workload import WorkloadError
        from pytest_mlpbench.architectures.kubeflow.pipeline import build_pipeline

        if (workload.name, native) not in self._built:
            try:
                self._built[workload.name, native] = build_pipeline(workload, self.image, native)
            except WorkloadError as exc:
                raise RunFailed(str(exc)) from exc
        return self._built[workload.name, native]


class KubeflowLocal(Architecture):
    name = "kubeflow-local"
    handoff_modes = ("shared", "native")

    def open(self, session_dir):
        self._pipelines = _Pipelines()

    def versions(self):
        return kfp_versions()

    def run(self, workload, run):
        from kfp import local

        pipeline = self._pipelines.get(workload, run.spec.handoff == "native")
        root = run.dir / "kfp"
        # no venv per task and, with packages_to_install=[], no pip install in it
        local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root), raise_on_error=True)
        log = run.dir / "kfp-local.log"
        run.logs.append(log)
        arguments = {"spec": to_param(run.spec.__dict__), "env": to_param(run.env)}
        exits = TaskExits(workload, tmpdir=run.dir / "tmp")
        with exits.installed():
            error = run_in_thread(lambda: pipeline(**arguments), run, stop=lambda: kill_tasks(root), log=log)
        if error is not None:
            raise RunFailed(failure_message(run, error, log, exits.codes)) from error


def task_of(steps: dict[str, str], command) -> tuple[str | None, int | None]:
    """The workload step and fan-out index of a KFP task, from its executor
    arguments; ``steps`` maps component function names to step names."""
    args = [str(a) for a in command]
    step = index = None
    for flag, value in zip(args, args[1:]):
        if flag == "--function_to_execute":
            step = steps.get(value)
        elif flag == "--executor_input":
            item = json.loads(value).get("inputs", {}).get("parameterValues", {}).get("item")
            if item is not None:
                index = json.loads(item).get("index")
    return step, index


_SUBPROCESS_LOCK = threading.Lock()


class TaskExits:
    """The exit status of each task process kfp.local's SubprocessRunner
    starts, by step and fan-out index: kfp.local itself says only FAILURE.
    With ``tmpdir``, the tasks' temporary files go there (the run's
    directory): each KFP task writes its component module into a fresh
    ``mktemp -d`` directory that nothing removes."""

    def __init__(self, workload, tmpdir: Path | None = None):
        from pytest_mlpbench.architectures.kubeflow.pipeline import identifier

        self.steps = {identifier(s.name): s.name for s in workload.steps}
        self.codes: dict[tuple[str, int | None], int] = {}
        self.tmpdir = tmpdir

    @contextlib.contextmanager
    def installed(self):
        from kfp.local import subprocess_task_handler

        with _SUBPROCESS_LOCK:
            original = subprocess_task_handler.run_local_subprocess

            def run_local_subprocess(full_command, env_vars=None):
                if self.tmpdir is not None:
                    self.tmpdir.mkdir(parents=True, exist_ok=True)
                    env_vars = {**(env_vars or {}), "TMPDIR": str(self.tmpdir)}
                code = original(full_command, env_vars=env_vars)
                with contextlib.suppress(ValueError):
                    step, index = task_of(self.steps, full_command)
                    if step is not None:
                        self.codes[(step, index)] = code
                return code

            subprocess_task_handler.run_local_subprocess = run_local_subprocess
            try:
                yield
            finally:
                subprocess_task_handler.run_local_subprocess = original


def run_in_thread(fn, run, stop, log: Path, stopped: str = "its KFP tasks", watch=None) -> BaseException | None:
    """Call ``fn`` in a thread (kfp.local blocks with no deadline of its own),
    its printed output going to ``log``; return what it raised. On timeout or
    interruption, ``stop()`` the tasks until the thread ends (what was
    ``stopped`` goes into the timeout's message). ``watch()``, asked every
    ``WATCH_S`` while the thread runs and once more if it raised, returns why
    the run cannot go on (the container engine died) or None: the run then
    fails at once with that reason, its tasks stopped."""
    outcome: dict = {}
    # An Event, not Thread.join/is_alive: in CPython 3.11 a KeyboardInterrupt inside join() marks
    # a thread that still runs as stopped (bpo-45274's fix), and its tasks would never be stopped.
    done = threading.Event()

    def target():
        try:
            fn()
        except BaseException as exc:  # handed to the caller
            outcome["error"] = exc
        finally:
            done.set()

    with open(log, "a") as out, contextlib.redirect_stdout(out):
        thread = threading.Thread(target=target, name=f"mlpbench-{run.spec.run_id}", daemon=True)
        thread.start()
        try:
            while not done.is_set():
                remaining = run.remaining_s()
                if remaining == 0:
                    stop_until_done(done, stop)
                    raise RunTimeout(f"run exceeded --mlpbench-timeout={run.timeout_s:g}s; stopped {stopped}")
                done.wait(WATCH_S if remaining is None or watch is not None else remaining)
                if watch is not None and not done.is_set() and (reason := watch()):
                    stop_until_done(done, stop, ENGINE_GRACE_S)
                    raise RunFailed(f"{reason}\nstopped {stopped}")
        except RunFailed:  # a timeout or a dead engine: stopped already
            raise
        except BaseException:  # Ctrl-C, SIGTERM
            stop_until_done(done, stop)
            raise
    error = outcome.get("error")
    if watch is not None:
        # a client can see the engine's socket close a moment before the engine's process can be
        # seen to have ended: after a connection error, give that moment before blaming the pipeline
        settle = time.monotonic() + (ENGINE_SETTLE_S if _connection_error(error) else 0)
        while (reason := watch()) is None and time.monotonic() < settle:
            time.sleep(0.05)
        if reason:
            stop()
            own = "" if error is None else f"; the pipeline's own error: {type(error).__name__}: {error}"
            raise RunFailed(f"{reason}\nstopped {stopped}{own}")
    return error


def _connection_error(error: BaseException | None) -> bool:
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError) or "connection" in str(error).lower():
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


#: How often ``run_in_thread`` asks ``watch`` whether the run can go on.
WATCH_S = 0.25
#: How long to keep stopping the tasks of a run whose engine died before returning.
ENGINE_GRACE_S = 10.0
#: How long a pipeline's connection error waits for ``watch`` to name its cause.
ENGINE_SETTLE_S = 2.0


def stop_until_done(done: threading.Event, stop, grace_s: float = STOP_GRACE_S) -> None:
    """kfp.local starts the next task when one dies, so keep stopping them
    until the pipeline's thread says it is ``done``."""
    deadline = time.monotonic() + grace_s
    while not done.is_set() and time.monotonic() < deadline:
        stop()
        done.wait(0.1)


def kill_tasks(pipeline_root: Path) -> None:
    """Kill this process's task processes of one run: kfp.local starts them
    with plain Popen, and their command lines name the run's pipeline root."""
    marker = str(pipeline_root)
    for proc in psutil.Process().children(recursive=True):
        try:
            if any(marker in part for part in proc.cmdline()):
                for victim in proc.children(recursive=True) + [proc]:
                    victim.kill()
        except psutil.Error:
            pass


def failure_message(run, error: BaseException, log: Path, exits: dict | None = None, what: str = "its process") -> str:
    """kfp.local's error, then each failed task: its own error and how its
    process (``what``) ended, where known, and the end of the log."""
    failed = [e for e in read_events(run.spec.events, run.spec.run_id) if e.get("outcome") == "failed"]
    exits = exits or {}
    lines = [f"kfp.local: {error}"]
    for e in failed:
        key = (e["step"], e.get("index"))
        lines.append(task_failure(run, *key, exits.get(key), what))
    seen = {(e["step"], e.get("index")) for e in failed}
    lines += [task_failure(run, step, index, code, what) for (step, index), code in exits.items()
              if code and (step, index) not in seen]  # no event: it died before it could write one
    return ANSI.sub("", "\n".join(lines) + f"\n{tail(log)}")


class KubeflowRemote(Architecture):
    """Submits to the KFP API at ``--mlpbench-kubeflow-host``. The tasks run in
    ``--mlpbench-kubeflow-image`` (with pytest-mlpbench and the workloads
    installed); the artifacts directory must be one all pods share."""

    name = "kubeflow"
    options = (HOST, IMAGE, ARTIFACTS, NAMESPACE, EXPERIMENT, REMOTE_POLL)

    def check(self):
        missing = [flag for flag, value in (
            ("--mlpbench-kubeflow-host=URL (or $KF_PIPELINES_ENDPOINT)", self.host),
            ("--mlpbench-kubeflow-image=IMAGE (with pytest-mlpbench and the workloads installed)",
             self.settings.get("kubeflow_image")),
            ("--mlpbench-kubeflow-artifacts=DIR (a volume every task pod mounts)",
             self.settings.get("kubeflow_artifacts")),
        ) if not value]
        if missing:
            raise Unavailable("kubeflow: no KFP endpoint configured; set " + ", ".join(missing))
        if not self.host.startswith(("http://", "https://")):
            raise Unavailable(f"kubeflow: --mlpbench-kubeflow-host={self.host!r} is not an http(s) URL")

    @property
    def host(self) -> str | None:
        return self.settings.get("kubeflow_host") or os.environ.get("KF_PIPELINES_ENDPOINT")

    def open(self, session_dir):
        import kfp

        probe(self.host)  # kfp.Client itself retries an unreachable host for half a minute
        self._pipelines = _Pipelines(self.settings.kubeflow_image)
        self.client = kfp.Client(host=self.host, namespace=self.settings.get("kubeflow_namespace") or "kubeflow")

    def versions(self):
        return kfp_versions()

    def run(self, workload, run):
        from pytest_mlpbench.architectures.kubeflow.pipeline import compile_pipeline

        package = compile_pipeline(self._pipelines.get(workload), run.dir / "pipeline.yaml")
        spec, env = remote_spec(run, self.settings.kubeflow_artifacts)
        result = self.client.create_run_from_pipeline_package(
            str(package), arguments={"spec": to_param(spec), "env": to_param(env)}, run_name=run.spec.run_id,
            experiment_name=self.settings.get("kubeflow_experiment") or "mlpbench", enable_caching=False)
        detail = self._wait(result.run_id, run)
        record_task_details(detail, workload, run)
        if str(detail.state).upper() != "SUCCEEDED":
            raise RunFailed(f"KFP run {result.run_id} ended {detail.state}: {getattr(detail, 'error', None)}")

    def _wait(self, run_id: str, run):
        def finished():
            detail = self.client._run_api.run_service_get_run(run_id=run_id, _request_timeout=REQUEST_TIMEOUT_S)
            return detail if str(detail.state).upper() in FINISHED else None

        return poll_until(finished, run, self.settings.get("remote_poll") or 2.0,
                          stop=lambda: self.client.terminate_run(run_id), what=f"terminated KFP run {run_id}")


REQUEST_TIMEOUT_S = 30
FINISHED = {"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED", "CANCELLED"}


def probe(host: str) -> None:
    """Raise :class:`Unavailable` unless the KFP API answers (any HTTP status
    counts: an endpoint behind a login still answers)."""
    try:
        urllib.request.urlopen(f"{host.rstrip('/')}/apis/v2beta1/healthz", timeout=10).close()
    except urllib.error.HTTPError:
        pass
    except (OSError, ValueError) as exc:
        raise Unavailable(f"kubeflow: KFP endpoint {host} does not answer: {exc}") from exc


def remote_spec(run, artifacts: str) -> tuple[dict, dict]:
    """The run spec and environment as a pod sees them: artifacts under the
    shared directory, events in the pod (they cannot reach this machine)."""
    spec = dict(run.spec.__dict__)
    spec["artifacts"] = f"{artifacts.rstrip('/')}/{run.spec.run_id}"
    spec["events"] = "/tmp/mlpbench-events.jsonl"
    env = {"MLPBENCH_EVENTS": spec["events"]}
    if run.spec.traceparent:
        env["TRACEPARENT"] = run.spec.traceparent
    return spec, env


def _ns(value) -> int | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return int(value.timestamp() * 1e9)


def record_task_details(detail, workload, run) -> None:
    """Per-task create/start/end from the run's task details (KFP v2 API)."""
    steps = {s.name for s in workload.steps}
    tasks = getattr(getattr(detail, "run_details", None), "task_details", None) or []
    counters: dict = {}
    # the API does not say which iteration a loop task ran: number them in creation order
    for task in sorted(tasks, key=lambda t: _ns(t.create_time) or 0):
        name = task.display_name
        if name not in steps:
            continue  # the root DAG and the for-loop DAGs
        index = None
        if workload.step(name).foreach:
            index = counters[name] = counters.get(name, -1) + 1
        run.add_task_info(name, index, created_ns=_ns(task.create_time), started_ns=_ns(task.start_time),
                          finished_ns=_ns(task.end_time), kfp_task_id=task.task_id, kfp_state=str(task.state))
