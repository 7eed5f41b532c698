"""``mlflow``: each workload as an MLflow Project (an ``MLproject`` with one
entry point per step, each running ``python -m pytest_mlpbench.step``), its
steps run in dependency order with ``mlflow.projects.run(env_manager="local")``,
each step an MLflow run nested under a parent run per benchmark run: MLflow's
multistep-workflow pattern. Tracking goes to a SQLite store in the session's
directory; telemetry is off.

Steps run synchronously in the test process, as a driver script would run
them; the tasks of a fan-out step are submitted with ``synchronous=False``
(MLflow then starts one ``mlflow run`` process per task) and run side by side,
or with ``--mlpbench-mlflow-fanout=serial`` synchronously one after another.
The tracking URI and the step environment are set only while a run is under
way and put back after, so nothing else in the test process sees them.

Native hand-off carries files through MLflow's artifact store, as MLflow's
multistep workflow does: each step logs its files as artifacts of its own
run, and the driver hands each later step the artifact URIs to fetch them
from. The transfers happen in the step process (the project's entry points
run :mod:`pytest_mlpbench.architectures.mlflow_step`, which downloads with
``mlflow.artifacts.download_artifacts`` before the task and logs its
directory with ``log_artifacts`` after it, under the task's KEY); the driver
keeps the MLflow run of every task it submitted.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import threading
from importlib import metadata
from pathlib import Path

import psutil

from pytest_mlpbench.architectures.base import Architecture, RunFailed, RunTimeout, Unavailable, kill_group
from pytest_mlpbench.architectures.subprocesses import task_failure
from pytest_mlpbench.model.workload import fanout_items, step_inputs
from pytest_mlpbench.options import Option, choice
from pytest_mlpbench.sinks.mlflow import TELEMETRY_OFF, environ, import_mlflow
from pytest_mlpbench.step import handoff, task_spec, write_json_atomic
from pytest_mlpbench.step.events import read_events

PARENT_TAG = "mlflow.parentRunId"


FANOUT = Option("mlflow_fanout", "How the mlflow architecture runs the tasks of a fan-out step: concurrent "
                "(mlflow.projects.run(synchronous=False): one `mlflow run` process per task, side by side) or serial "
                "(synchronous=True, one after another) (default: concurrent).",
                choice("concurrent", "serial"), "concurrent", "MODE")


class MlflowProjects(Architecture):
    name = "mlflow"
    options = (FANOUT,)
    handoff_modes = ("shared", "native")

    def check(self):
        try:
            metadata.version("mlflow")
        except metadata.PackageNotFoundError:
            raise Unavailable("mlflow: MLflow is not installed; pip install mlflow") from None

    def versions(self):
        return {"mlflow": metadata.version("mlflow")}

    def open(self, session_dir):
        self.dir = Path(session_dir)
        self.uri = f"sqlite:///{self.dir / 'mlflow.db'}"
        self.projects: dict[str, Path] = {}
        self.experiments: dict[str, str] = {}
        mlflow = import_mlflow()
        with tracking(self.uri, {}):
            # creates the store's schema now rather than in the first measured run
            mlflow.MlflowClient().search_experiments(max_results=1)

    def run(self, workload, run):
        mlflow = import_mlflow()
        project = self._project(run.spec.handoff == "native")
        spec_file = run.dir / SPEC_NAME
        spec_file.write_text(run.spec.to_json())
        fanout = self.settings.get("mlflow_fanout", "concurrent") if self.settings else "concurrent"
        driver = Driver(run, project, concurrent=fanout == "concurrent")
        with tracking(self.uri, run.env), Watchdog(run, str(spec_file)) as watchdog:
            driver.experiment_id = self._experiment(mlflow, workload)
            parent = mlflow.start_run(experiment_id=driver.experiment_id, run_name=run.spec.run_id,
                                      tags={"mlpbench.run_id": run.spec.run_id, "mlpbench.scale": run.spec.scale})
            status = "FAILED"
            try:
                driver.run_steps(workload, watchdog)
                status = "FINISHED"
            finally:
                mlflow.end_run(status)
                driver.collect_task_info(parent.info.run_id)

    def _project(self, native: bool) -> Path:
        name = "native" if native else "shared"
        if name not in self.projects:
            directory = self.dir / "projects" / name
            directory.mkdir(parents=True, exist_ok=True)
            write_mlproject(directory, native)
            self.projects[name] = directory
        return self.projects[name]

    def _experiment(self, mlflow, workload) -> str:
        if workload.name not in self.experiments:
            name = f"mlpbench-{workload.name}"
            client = mlflow.MlflowClient()
            found = client.get_experiment_by_name(name)
            self.experiments[workload.name] = found.experiment_id if found else client.create_experiment(
                name, artifact_location=(self.dir / "mlartifacts" / workload.name).as_uri())
        return self.experiments[workload.name]


#: The project's entry points: a step, and one task of a fan-out step. Every step runs the same
#: command, so the step is a parameter, as in MLflow's own examples; MLflow parses the MLproject
#: twice for every task it runs, and an entry point per step made that 5 ms of YAML each time.
STEP_ENTRY, TASK_ENTRY = "step", "task"
SPEC_NAME = "spec.json"


def write_mlproject(directory: Path, native: bool = False) -> None:
    """The run's directory is a parameter; the driver puts each task's files there under
    fixed names (:data:`SPEC_NAME`, :func:`upstream_name`, :func:`outputs_name`)."""
    import yaml

    python = shlex.quote(sys.executable)  # the test's interpreter: env_manager="local" means this venv
    entry = "pytest_mlpbench.architectures.mlflow_step --handoff {handoff}" if native else "pytest_mlpbench.step"
    command = (f"{python} -m {entry} --spec {{run}}/{SPEC_NAME} --step {{step}} "
               f"--upstream-json {{run}}/{upstream_name('{step}')}")
    parameters = {"run": "string", "step": "string", **({"handoff": "string"} if native else {})}
    entry_points = {
        STEP_ENTRY: {"parameters": parameters, "command": f"{command} --outputs {{run}}/{outputs_name('{step}', None)}"},
        TASK_ENTRY: {"parameters": {**parameters, "index": "string"},
                     "command": f"{command} --index {{index}} --outputs {{run}}/{outputs_name('{step}', '{index}')}"},
    }
    text = yaml.safe_dump({"name": "mlpbench" + ("-native" if native else ""), "entry_points": entry_points},
                          sort_keys=False)
    (directory / "MLproject").write_text(text)


def upstream_name(step_name: str) -> str:
    return f"{step_name}.upstream.json"


def outputs_name(step_name: str, index) -> str:
    return f"{step_name}{'' if index is None else f'.{index}'}.outputs.json"


@contextlib.contextmanager
def tracking(uri: str, env):
    """Use ``uri`` as MLflow's tracking URI and ``env`` (plus the venv's
    ``bin``, where MLflow finds the ``mlflow`` command for asynchronous runs)
    in os.environ, which step processes inherit; restore both after."""
    mlflow = import_mlflow()
    from mlflow.tracking._tracking_service import utils

    saved_uri = utils._tracking_uri  # None when unset: get_tracking_uri() would give the default instead
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    with environ({**env, **TELEMETRY_OFF, "PATH": path, "MLFLOW_TRACKING_URI": uri}):
        mlflow.set_tracking_uri(uri)
        try:
            yield
        finally:
            mlflow.set_tracking_uri(saved_uri)  # None also unsets MLFLOW_TRACKING_URI; environ() then restores it


class Driver:
    """Runs one benchmark run's steps as MLflow project runs."""

    def __init__(self, run, project: Path, concurrent: bool = True):
        self.run = run
        self.concurrent = concurrent
        self.project = project
        self.experiment_id: str | None = None
        self.native = run.spec.handoff == "native"
        self.mlflow_runs: dict[str, str] = {}  # native hand-off: each task's KEY -> its MLflow run id
        self.fetch: dict[str, str] = {}  # native hand-off: KEY -> artifact URI of what the current step needs

    def run_steps(self, workload, watchdog) -> None:
        outputs: dict = {}
        for step in workload.steps:
            if watchdog.fired.is_set() or self.run.remaining_s() == 0:
                raise RunTimeout(f"run exceeded --mlpbench-timeout={self.run.timeout_s:g}s before step {step.name!r}")
            inputs = step_inputs(workload, step, outputs)
            upstream = {need: outputs[need] for need in step.needs}
            write_json_atomic(self.run.dir / upstream_name(step.name), upstream)
            self.fetch = self.artifact_uris(handoff.keys(upstream)) if self.native else {}
            if step.foreach:
                outputs[step.name] = self.fan_out(step, inputs, watchdog)
            else:
                outputs[step.name] = self.one(step, watchdog)

    def params(self, step_name: str, index: int | None = None) -> tuple[dict, Path]:
        out = self.run.dir / outputs_name(step_name, index)
        params = {"run": str(self.run.dir), "step": step_name}
        if index is not None:
            params["index"] = str(index)
        if self.native:
            params["handoff"] = str(self.plan(step_name, index))
        return params, out

    def artifact_uris(self, keys) -> dict[str, str]:
        """Where each of these tasks logged its files: its MLflow run's artifact URI, then its KEY."""
        from mlflow import MlflowClient

        client = MlflowClient()
        return {key: f"{client.get_run(self.mlflow_runs[key]).info.artifact_uri.rstrip('/')}/{key}"
                for key in sorted(keys)}

    def plan(self, step_name: str, index: int | None) -> Path:
        """The native hand-off plan of a task (see :mod:`.mlflow_step`)."""
        key = handoff.task_key(step_name, index)
        path = self.run.dir / f"{key}.handoff.json"
        write_json_atomic(path, {"key": key, "artifacts": task_spec(self.run.spec, step_name, index).artifacts,
                                 "carry_to": str(self.run.dir / "carried" / key), "fetch": self.fetch,
                                 "error": str(self.run.dir / f"{key}.handoff-error")})
        return path

    def handoff_error(self, step_name: str, index: int | None) -> str | None:
        """Why a task's native hand-off failed, if it did (the step itself ran fine or not at all)."""
        path = self.run.dir / f"{handoff.task_key(step_name, index)}.handoff-error"
        if not path.exists():
            return None
        task = step_name + ("" if index is None else f"[{index}]")
        return f"step {task!r}: native hand-off: {path.read_text()}"

    def submit(self, params: dict, synchronous: bool):
        import mlflow.projects

        # no run_name: the parameters name the task, and a name costs one more write to the store
        entry_point = STEP_ENTRY if "index" not in params else TASK_ENTRY
        return mlflow.projects.run(str(self.project), entry_point=entry_point, parameters=params,
                                   experiment_id=self.experiment_id, env_manager="local", synchronous=synchronous)

    def one(self, step, watchdog, index: int | None = None) -> dict:
        from mlflow.exceptions import ExecutionException

        params, out = self.params(step.name, index)
        submitted: list = []
        try:
            with waited_on(submitted):
                task = self.submit(params, synchronous=True)
        except ExecutionException as exc:
            if watchdog.fired.is_set():
                raise RunTimeout(f"run exceeded --mlpbench-timeout={self.run.timeout_s:g}s in step {step.name!r}")
            if reason := self.handoff_error(step.name, index):
                raise RunFailed(f"{reason}; MLflow: {exc}") from None
            code = getattr(getattr(submitted[-1], "command_proc", None), "returncode", None) if submitted else None
            if code is None:
                raise RunFailed(f"step {step.name!r}: {exc}{self.step_error(step.name)}") from None
            raise RunFailed(f"{task_failure(self.run, step.name, index, code)}; MLflow: {exc}") from None
        self.mlflow_runs[handoff.task_key(step.name, index)] = task.run_id
        return read_json(out)

    def fan_out(self, step, inputs, watchdog) -> list[dict]:
        indices = range(len(fanout_items(step, inputs)))
        if not self.concurrent:
            return [self.one(step, watchdog, index) for index in indices]
        tasks = [self.params(step.name, i) for i in indices]
        submitted = []
        try:
            for params, _ in tasks:
                submitted.append(self.submit(params, synchronous=False))
                submitted[-1].mlpbench_index = params["index"]
            for task in submitted:
                self.wait(step.name, task)
                self.mlflow_runs[handoff.task_key(step.name, int(task.mlpbench_index))] = task.run_id
        finally:
            for task in submitted:
                kill_group(task.command_proc)  # `mlflow run` leads its own process group
        return [read_json(out) for _, out in tasks]

    def wait(self, step_name: str, task) -> None:
        try:
            rc = task.command_proc.wait(timeout=self.run.remaining_s())
        except subprocess.TimeoutExpired:
            raise RunTimeout(f"run exceeded --mlpbench-timeout={self.run.timeout_s:g}s in step {step_name!r}") from None
        if rc != 0:
            index = int(task_index) if (task_index := getattr(task, "mlpbench_index", None)) is not None else None
            if reason := self.handoff_error(step_name, index):
                raise RunFailed(f"{reason}; MLflow run {task.run_id}")
            raise RunFailed(f"{task_failure(self.run, step_name, index, rc, 'its `mlflow run` process')}; "
                            f"MLflow run {task.run_id}")

    def step_error(self, step_name: str) -> str:
        """The step's own error, from its event, when it got that far."""
        errors = [e.get("error") for e in read_events(self.run.spec.events, self.run.spec.run_id)
                  if e["step"] == step_name and e.get("outcome") == "failed"]
        return f": {errors[-1]}" if errors and errors[-1] else ""

    def collect_task_info(self, parent_id: str) -> None:
        """MLflow's own times of every step run: created (launch delay) and ended."""
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        try:
            children = MlflowClient().search_runs([self.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'")
        except MlflowException:
            return  # metadata only: the run's outcome stands without it
        for child in children:
            step = child.data.params.get("step")
            index = child.data.params.get("index")
            info = {"created_ns": child.info.start_time * 10**6, "mlflow_run_id": child.info.run_id,
                    "mlflow_status": child.info.status}
            if child.info.end_time:
                info["finished_ns"] = child.info.end_time * 10**6
            self.run.add_task_info(step, None if index is None else int(index), **info)


_WAIT_LOCK = threading.Lock()


@contextlib.contextmanager
def waited_on(found: list):
    """Keep what a synchronous ``mlflow.projects.run`` waits on: its error
    ("Run (ID ...) failed") leaves out how the step's process ended."""
    import mlflow.projects as projects

    with _WAIT_LOCK:
        original = projects._wait_for

        def wait_for(submitted_run):
            found.append(submitted_run)
            return original(submitted_run)

        projects._wait_for = wait_for
        try:
            yield
        finally:
            projects._wait_for = original


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


class Watchdog:
    """Kills the run's step processes at the run's deadline: a synchronous
    ``mlflow.projects.run`` waits without a limit, on a process it started in
    the test's own process group."""

    def __init__(self, run, marker: str):
        self.run = run
        self.marker = marker  # a string in every step process's command line
        self.fired = threading.Event()
        self._timer: threading.Timer | None = None

    def __enter__(self):
        remaining = self.run.remaining_s()
        if remaining is not None:
            self._timer = threading.Timer(remaining, self.kill)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, *exc):
        if self._timer:
            self._timer.cancel()

    def kill(self) -> None:
        self.fired.set()
        for proc in psutil.Process().children(recursive=True):
            try:
                if self.marker in " ".join(proc.cmdline()):
                    for victim in [proc, *proc.children(recursive=True)]:
                        victim.kill()
            except psutil.Error:
                pass
