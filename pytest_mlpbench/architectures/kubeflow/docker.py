"""``kubeflow-docker``: the Kubeflow architecture's pipeline run by kfp.local's
DockerRunner, one container per task, on the session's container engine
(see :mod:`pytest_mlpbench.architectures.containers`).

kfp 2.17 starts each task container with ``auto_remove=True`` and then waits
on it; Podman answers that wait with a 500 (Docker: 404) when the container is
already gone, and the task fails about two runs in three. So the containers
are started here instead (kfp's ``run_docker_container`` is replaced while a
run is under way): without auto-remove, waited on, inspected for their
created/started times, then removed.
"""
from __future__ import annotations

import contextlib
import threading

from pytest_mlpbench.architectures.base import RunFailed, poll_until
from pytest_mlpbench.architectures.containers.arch import INDEX_LABEL, STEP_LABEL, ContainerArchitecture, container_times, engine_environment
from pytest_mlpbench.architectures.kubeflow.local import _Pipelines, failure_message, kfp_versions, run_in_thread, task_of
from pytest_mlpbench.architectures.kubeflow.pipeline import identifier
from pytest_mlpbench.step.params import to_param

_PATCH_LOCK = threading.Lock()  # the replacement is module-global: one run at a time


class KubeflowDocker(ContainerArchitecture):
    name = "kubeflow-docker"
    handoff_modes = ("shared", "native")  # artifacts under the pipeline root, which every task container mounts

    def open(self, session_dir):
        super().open(session_dir)
        self._pipelines = _Pipelines(self.image)

    def versions(self):
        return {**super().versions(), **kfp_versions()}

    def run(self, workload, run):
        from kfp import local

        self.check_engine(run)
        pipeline = self._pipelines.get(workload, run.spec.handoff == "native")
        root = run.dir / "kfp"
        local.init(runner=local.DockerRunner(network_mode="none"), pipeline_root=str(root), raise_on_error=True)
        log = run.dir / "kfp-docker.log"
        run.logs.append(log)
        arguments = {"spec": to_param(run.spec.__dict__), "env": to_param(run.env)}
        starter = ContainerStarter(self, workload, run)
        try:
            with starter.installed(), engine_environment(self.engine):
                error = run_in_thread(lambda: pipeline(**arguments), run,
                                      stop=lambda: self.try_remove_run_containers(run), log=log,
                                      stopped="its containers", watch=self.engine_failure)
        except BaseException:
            self.try_remove_run_containers(run)  # the error in hand says more than a failed clean-up
            raise
        self.remove_run_containers(run)
        if error is not None:
            raise RunFailed(failure_message(run, error, log, starter.exits, "its container")) from error


class ContainerStarter:
    """Stands in for ``kfp.local.docker_task_handler.run_docker_container``."""

    def __init__(self, arch: KubeflowDocker, workload, run):
        self.arch, self.workload, self.run = arch, workload, run
        self.steps = {identifier(s.name): s.name for s in workload.steps}
        self.exits: dict[tuple[str, int | None], int] = {}  # exit code of each task's container

    @contextlib.contextmanager
    def installed(self):
        from kfp.local import docker_task_handler

        with _PATCH_LOCK:
            original = docker_task_handler.run_docker_container
            docker_task_handler.run_docker_container = self
            try:
                yield
            finally:
                docker_task_handler.run_docker_container = original

    def __call__(self, client, image, command, volumes, **run_args) -> int:
        run_args.pop("auto_remove", None)
        step, index = self.task_of(command)
        labels = self.arch.run_labels(self.run, **{STEP_LABEL: step or "", INDEX_LABEL: index})
        # the run directory holds the step events and artifacts, at the same path as here
        volumes = {**volumes, str(self.run.dir): {"bind": str(self.run.dir), "mode": "rw"}}
        cgroup = self.arch.engine.run_cgroup(self.run.spec.run_id)
        if cgroup:
            run_args["cgroup_parent"] = cgroup
        if self.arch.cpuset():
            run_args["cpuset_cpus"] = self.arch.cpuset()
        container = client.containers.run(image=image, command=command, detach=True, volumes=volumes,
                                          labels=labels, **run_args)
        try:
            for line in container.logs(stream=True, follow=True):
                print(line.decode(errors="replace"), end="")
            code = exit_code(container)
            if step is not None:
                self.exits[(step, index)] = code
            return code
        finally:
            with contextlib.suppress(Exception):
                container.reload()
                if step is not None:
                    self.run.add_task_info(step, index, **container_times(container.attrs))
            with contextlib.suppress(Exception):
                container.remove(force=True)

    def task_of(self, command: list[str]) -> tuple[str | None, int | None]:
        """The workload step and fan-out index of a task, from its executor arguments."""
        return task_of(self.steps, command)


def exit_code(container, poll_s: float = 0.1) -> int:
    """The exit code of a container whose log stream has ended. Podman 4.3's
    ``wait`` keeps a core busy for as long as the container runs, which the
    monitor would charge to the run: poll its state instead."""
    def exited():
        container.reload()
        state = container.attrs["State"]
        return state["ExitCode"] if state["Status"] in ("exited", "dead") else None

    return poll_until(exited, None, poll_s)
