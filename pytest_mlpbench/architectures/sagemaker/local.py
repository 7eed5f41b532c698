"""``sagemaker-local``: the SageMaker architecture's pipeline (one
ProcessingStep per workload step) run in SageMaker local mode, on the
session's container engine with the locally built image, every S3 location
replaced by a ``file://`` directory of the session. No AWS account is used.

Where SageMaker SDK 3.27's local pipeline path breaks, we work around it here:

- ``LocalPipelineSession`` is no ``PipelineSession``, and a ``Processor``
  with instance type ``local`` swaps any other session for a ``LocalSession``:
  so ``Processor.run`` in a pipeline definition runs the job at once instead
  of returning step arguments. :class:`_Session` is both.
- Looking for Compose, the SDK runs ``docker compose version`` and lets the
  ``FileNotFoundError`` through when there is no ``docker`` command (Podman
  hosts): we name the compose command ourselves.
- Every job container joins a bridge network ``sagemaker-local`` (NAT rules,
  IP forwarding); the steps need no network, so they get ``network_mode: none``.
- ``docker compose up`` leaves the stopped containers behind: we inspect them
  for their times and remove them.
- Local mode runs no ForEach steps, so fan-out workloads fail with that reason.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import threading
from pathlib import Path

import psutil

from pytest_mlpbench.architectures.containers.arch import (INDEX_LABEL, STEP_LABEL, ContainerArchitecture, engine_environment,
                               record_containers)
from pytest_mlpbench.architectures.base import RunFailed, Unavailable
from pytest_mlpbench.architectures.kubeflow.local import run_in_thread
from pytest_mlpbench.architectures.sagemaker.remote import REGION
from pytest_mlpbench.architectures.subprocesses import task_failure
from pytest_mlpbench.step.events import read_events
from pytest_mlpbench.step.params import to_param

LOCAL_ROLE = "arn:aws:iam::000000000000:role/mlpbench-local"  # local mode assumes no role
_PATCH_LOCK = threading.Lock()


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        return ["docker", "compose"]
    return None


class SageMakerLocal(ContainerArchitecture):
    name = "sagemaker-local"
    shared_is_native = True  # channels carry each step's files to the later steps' containers
    options = (*ContainerArchitecture.options, REGION)

    def check(self):
        super().check()
        if compose_command() is None:
            raise Unavailable("sagemaker-local: SageMaker local mode needs Docker Compose "
                              "(apt-get install docker-compose, or the docker compose plugin)")

    def open(self, session_dir):
        super().open(session_dir)
        self.root = Path(session_dir) / "sagemaker"
        self.root.mkdir(parents=True, exist_ok=True)
        self.region = self.settings.get("sagemaker_region") or "us-east-1"
        # the SDK makes default AWS sessions on import and in step definitions: they need a region
        with default_region(self.region):
            self.session = local_session(self.root, self.region)
        self._pipelines: dict = {}

    def versions(self):
        from importlib.metadata import version

        return {**super().versions(), "sagemaker": version("sagemaker"), "sagemaker-core": version("sagemaker-core")}

    def check_workload(self, workload):
        fanouts = [s.name for s in workload.steps if s.foreach]
        if fanouts:
            raise Unavailable(f"sagemaker-local: SageMaker local mode runs no ForEach steps, so the fan-out "
                              f"step(s) {fanouts} of workload {workload.name!r} cannot run")
        super().check_workload(workload)  # restarts the engine if it died

    def pipeline(self, workload):
        if workload.name not in self._pipelines:
            from pytest_mlpbench.architectures.sagemaker.pipeline import PipelineSettings, build_pipeline

            settings = PipelineSettings(role=LOCAL_ROLE, s3_root=f"file://{self.root}", image=self.image,
                                instance_type="local")
            with default_region(self.region):
                pipeline = build_pipeline(workload, settings, self.session)
            self.session.create_pipeline(pipeline, f"pytest-mlpbench {workload.name}")
            self._pipelines[workload.name] = pipeline
        return self._pipelines[workload.name]

    def run(self, workload, run):
        self.check_engine(run)
        pipeline = self.pipeline(workload)
        spec = {**run.spec.__dict__, "artifacts": "", "events": ""}  # set by each task in its container
        env = {"TRACEPARENT": run.spec.traceparent} if run.spec.traceparent else {}
        params = {"RunId": run.spec.run_id, "Spec": to_param(spec), "Env": to_param(env)}
        log = run.dir / "sagemaker-local.log"
        run.logs.append(log)
        outcome: dict = {}

        def execute():
            outcome["execution"] = self.session.start_pipeline_execution(
                PipelineName=pipeline.name, PipelineParameters=params,
                PipelineExecutionDisplayName=run.spec.run_id[:82])

        ended = False
        try:
            with compose_patches(self, run), engine_environment(self.engine), default_region(self.region):
                error = run_in_thread(execute, run, stop=lambda: self.stop(run), log=log,
                                      stopped="its containers", watch=self.engine_failure)
            record_containers(self.engine, run)
            ended = True
        finally:
            if ended:
                self.remove_run_containers(run)
            else:  # the error in hand says more than a failed clean-up
                self.try_remove_run_containers(run)
            self.collect(run)
        if error is not None:
            raise RunFailed(f"sagemaker-local: {type(error).__name__}: {error}") from error
        self.check_execution(outcome["execution"], run)

    def stop(self, run) -> None:
        """Stop a run's containers and, where the engine died under it, the
        Compose processes of its jobs, which may keep waiting on it."""
        self.try_remove_run_containers(run)
        if self.engine is None or self.engine.failure():
            marker = str(self.root / "containers")
            for proc in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if any(marker in part for part in proc.cmdline()):
                        proc.kill()

    def collect(self, run) -> None:
        """Ship the tasks' events into the run's sink and its files into the run's artifacts."""
        from pytest_mlpbench.step.events import append_event

        done = self.root / "runs" / run.spec.run_id
        for path in sorted((done / "steps").rglob("events.jsonl")):
            for event in read_events(path, run.spec.run_id):
                append_event(run.spec.events, event)
        if done.exists():
            shutil.move(str(done), str(run.artifacts / "sagemaker"))

    def check_execution(self, execution, run) -> None:
        steps = execution.list_steps()["PipelineExecutionSteps"]
        names = {step_id(s.name): s.name for s in run.workload.steps}
        for info in steps:
            name = names.get(info.get("StepName"))
            if name and info.get("StartTime"):
                run.add_task_info(name, None, queued_ns=int(info["StartTime"] * 1e9),
                                  sagemaker_end_ns=int(info.get("EndTime", 0) * 1e9) or None,
                                  sagemaker_status=info.get("StepStatus"))
        status = execution.describe()
        # Compose (1.29, with Podman) can exit 0 although the job's container did not: the SDK then
        # reports the step, and the execution, Succeeded. The containers' own exit codes decide.
        failed = {key: info["exit_code"] for key, info in run.task_info.items() if info.get("exit_code")}
        failed_events = {(e["step"], e.get("index")) for e in read_events(run.spec.events, run.spec.run_id)
                         if e.get("outcome") == "failed"}
        causes = [task_failure(run, step, index, code, "its container") for (step, index), code in failed.items()]
        causes += [task_failure(run, step, index, None, "its container") for step, index in failed_events
                   if (step, index) not in failed]
        where = "".join(f"{cause}\n" for cause in causes)
        if status.get("PipelineExecutionStatus") != "Succeeded":
            raise RunFailed(f"sagemaker-local: {where}execution {status.get('PipelineExecutionArn')} ended "
                            f"{status.get('PipelineExecutionStatus')}: {status.get('FailureReason')}")
        if causes:
            raise RunFailed(f"sagemaker-local: {where}execution {status.get('PipelineExecutionArn')} was "
                            "reported Succeeded, but the container of a step failed")
        if not read_events(run.spec.events, run.spec.run_id):
            raise RunFailed("sagemaker-local: the execution succeeded but no step wrote its events")


@contextlib.contextmanager
def default_region(region: str):
    if os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"):
        yield
        return
    os.environ["AWS_DEFAULT_REGION"] = region
    try:
        yield
    finally:
        os.environ.pop("AWS_DEFAULT_REGION", None)


def step_id(name: str) -> str:
    from pytest_mlpbench.architectures.sagemaker.pipeline import step_id as sagemaker_step_id

    return sagemaker_step_id(name)


def local_session(root: Path, region: str):
    """A session that is both a LocalPipelineSession (runs the pipeline here)
    and a PipelineSession (so step definitions capture arguments, not run jobs)."""
    import boto3
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.mlops.local import LocalPipelineSession

    from pytest_mlpbench.architectures.sagemaker import pipeline  # noqa: F401  (its SDK imports need the region too)

    class _Session(LocalPipelineSession, PipelineSession):
        pass

    session = _Session(boto_session=boto3.Session(region_name=region), disable_local_code=True)
    (root / "containers").mkdir(exist_ok=True)
    session.config = {"local": {"local_code": False, "container_root": str(root / "containers")}}
    return session


@contextlib.contextmanager
def compose_patches(arch: SageMakerLocal, run):
    """Our compose command, no bridge network, labels that name the run and
    step, and the run's cgroup."""
    from sagemaker.core.local import image

    cls = image._SageMakerContainer
    original_host = cls._create_docker_host
    original_prefix = vars(cls)["_get_compose_cmd_prefix"]  # the staticmethod itself
    # in a session of its own: a Ctrl-C at the terminal reaches the test process, which removes the
    # run's containers, and not Compose, whose graceful stop would race with that removal
    command = (["setsid"] if shutil.which("setsid") else []) + compose_command()

    def create_docker_host(self, host, environment, optml_subdirs, command_name, volumes):
        config = original_host(self, host, environment, optml_subdirs, command_name, volumes)
        config.pop("networks", None)
        config["network_mode"] = "none"
        config["labels"] = arch.run_labels(run, **task_labels(self.container_arguments or []))
        cgroup = arch.engine.run_cgroup(run.spec.run_id)
        if cgroup:
            config["cgroup_parent"] = cgroup
        if arch.cpuset():
            config["cpuset"] = arch.cpuset()
        return config

    with _PATCH_LOCK:
        cls._create_docker_host = create_docker_host
        cls._get_compose_cmd_prefix = staticmethod(lambda: list(command))
        try:
            yield
        finally:
            cls._create_docker_host, cls._get_compose_cmd_prefix = original_host, original_prefix


def task_labels(arguments: list) -> dict:
    """The step and fan-out index a processing job runs, from its container arguments."""
    args = [str(a) for a in arguments]
    found = {}
    for flag, value in zip(args, args[1:]):
        if flag == "--step":
            found[STEP_LABEL] = value
        elif flag == "--index":
            found[INDEX_LABEL] = value
    return found
