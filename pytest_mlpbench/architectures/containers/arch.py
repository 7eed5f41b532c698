"""What the container-per-step architectures share: the session's engine and
image, and the container times each step's record gets."""
from __future__ import annotations

import datetime
import importlib.util
import os
import re
from contextlib import contextmanager
from pathlib import Path

from pytest_mlpbench.architectures.base import Architecture, RunFailed, Unavailable
from pytest_mlpbench.architectures.containers.engine import DEFAULT_SOCKET, check_podman, kill_cgroup_tree, open_engine, ping
from pytest_mlpbench.architectures.containers.image import default_cache, ensure_image, ensure_workload_image, image_store
from pytest_mlpbench.architectures.containers.options import OPTIONS

STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d|)$")
RUN_LABEL = "mlpbench.run"
STEP_LABEL = "mlpbench.step"
INDEX_LABEL = "mlpbench.index"
#: The session's name for the image its step containers run, tagged ``<session id>``:
#: the steps' image plus the code of the workload being benchmarked.
SESSION_IMAGE = "localhost/mlpbench-session"


class ContainerArchitecture(Architecture):
    """Opens the engine and the steps' image for the session; closes both.

    The engine is supervised: a run fails as soon as the engine's service
    dies (:meth:`engine_failure`, polled while the run is under way), with
    the service's name and how it ended, and its containers are removed.
    Before the next benchmark (:meth:`check_workload`) a Podman service we
    started is started again; where it cannot be, the architecture is
    unavailable for the rest of the session, with the reason.

    The image the step containers run is :attr:`image`, a name of the
    session's (``localhost/mlpbench-session:<session id>``) that
    :meth:`check_workload` points, before each benchmark, at the steps' image
    plus that workload's code (:func:`ensure_workload_image`: built once per
    content, in seconds). The pipelines name it when they are defined, so a
    workload the session had not seen yet runs with its own code all the same.
    An image named with ``--mlpbench-container-image`` is used as it is.
    """

    options = OPTIONS

    engine = None
    image: str | None = None
    #: The image we built for the session, without workload code (None: the user named one).
    steps_image: str | None = None
    #: What :attr:`image` stands for now.
    current_image: str | None = None
    #: Why the engine cannot be used any more this session (it died and did not restart).
    unavailable: str | None = None

    def check(self):
        try:
            import docker  # noqa: F401  (kfp's DockerRunner and our engine client)
        except ImportError as exc:
            raise Unavailable(f"{self.name}: the docker Python package is missing ({exc}); "
                              "pip install docker") from exc
        choice = self.settings.get("container_engine") or "auto"
        url = self.settings.get("docker_host") or os.environ.get("DOCKER_HOST") or DEFAULT_SOCKET
        if choice != "podman" and ping(url) is None:
            return
        if choice == "docker":
            raise Unavailable(f"{self.name}: no Docker engine answers at {url}; start it or set "
                              "--mlpbench-docker-host, or use --mlpbench-container-engine=podman")
        try:
            check_podman()
        except Unavailable as exc:
            raise Unavailable(f"{self.name}: {exc}") from None

    def open(self, session_dir):
        try:
            self._open(Path(session_dir))
        except BaseException:
            self.close()  # the session forgets an architecture whose open() raised Unavailable
            raise

    def _open(self, session_dir: Path):
        cache = Path(self.settings.get("image_cache") or default_cache())
        self.engine = open_engine(Path(session_dir), self.settings, image_store(cache))
        self.build_log = Path(session_dir) / "image-build.log"
        self.image = self.settings.get("container_image")
        if self.image:
            return
        try:
            self.steps_image = ensure_image(self.engine, cache, log=self.build_log, torch=self.wants_torch())
            self.image = f"{SESSION_IMAGE}:{self.engine.session_id}"
            self.point_image(self.steps_image)
        except (RunFailed, OSError) as exc:  # OSError: the Docker SDK's API errors too
            raise Unavailable(f"{self.name}: could not build the steps' image ({exc}); name one "
                              "with --mlpbench-container-image") from exc

    def check_workload(self, workload):
        self.revive()
        self.use_workload(workload)

    def use_workload(self, workload) -> None:
        """Point :attr:`image` at the steps' image plus ``workload``'s code, built if need be."""
        if self.steps_image is None:  # the user's image: the workloads' code is theirs to put in
            return
        try:
            tag = ensure_workload_image(self.engine, self.steps_image, [workload], log=self.build_log)
            if tag != self.current_image:
                self.point_image(tag)
        except (RunFailed, OSError) as exc:
            raise Unavailable(f"{self.name}: could not add the code of workload {workload.name!r} to the "
                              f"steps' image ({exc}); see {self.build_log}") from exc

    def point_image(self, tag: str) -> None:
        repository, _, name = self.image.rpartition(":")
        with self.engine.client(timeout=60) as client:
            client.images.get(tag).tag(repository, name)
        self.current_image = tag

    def revive(self) -> None:
        """Start the engine's service again if it died since the last run:
        :class:`Unavailable`, with the reason, if it cannot run containers."""
        if self.unavailable:
            raise Unavailable(self.unavailable)
        if self.engine is None:
            return
        reason = self.engine.failure()
        if reason is None:
            return
        if self.engine.kind != "podman":  # the user's Docker engine: theirs to restart
            raise Unavailable(f"{self.name}: {reason}")
        try:
            self.engine.restart()
        except Unavailable as exc:
            self.unavailable = f"{self.name}: {reason}, and it did not restart: {exc}"
            raise Unavailable(self.unavailable) from None

    def engine_failure(self) -> str | None:
        """A run's error when the engine died under it, else None (see :func:`run_in_thread`'s ``watch``)."""
        if self.engine is None:
            return f"{self.name}: the container engine is closed"
        reason = self.engine.failure()
        if reason is None:
            return None
        then = ("it is started again for the next benchmark" if self.engine.kind == "podman"
                else "the benchmarks after this one are skipped until it answers again")
        return f"{self.name}: {reason} during the run; {then}"

    def check_engine(self, run) -> None:
        """Fail at once a run that starts while the engine is down."""
        reason = self.unavailable or (self.engine_failure() if self.engine is not None
                                      else f"{self.name}: the container engine is closed")
        if reason:
            raise RunFailed(reason.replace(" during the run", " before the run"))

    def wants_torch(self) -> bool:
        choice = self.settings.get("container_torch") or "auto"
        if choice == "auto":
            return importlib.util.find_spec("torch") is not None
        return choice == "yes"

    def close(self):
        if self.engine is not None:
            if self.steps_image and self.engine.kind == "docker":  # Podman's store goes with the session
                try:
                    with self.engine.client(timeout=30) as client:
                        client.images.remove(self.image, noprune=True)  # our name only: the image stays
                except Exception:
                    pass
            self.engine.close()
            self.engine = None

    def watch_pids(self):
        return self.engine.pids() if self.engine else []

    def watch_cgroups(self, run_id):
        cgroup = self.engine.run_cgroup(run_id) if self.engine else None
        return [cgroup] if cgroup else []

    def versions(self):
        if self.engine is None:
            return {}
        with self.engine.client(timeout=30) as client:
            version = str(client.version().get("Version"))
        accounting = f"not counted: {self.engine.unaccounted}" if self.engine.unaccounted else "cgroup"
        return {f"{self.engine.kind}-engine": version, "step-image": self.steps_image or self.image,
                "container-accounting": accounting}

    def cpuset(self) -> str | None:
        """The cores this process is pinned to (a pytest-xdist worker's), for the containers'
        cpuset: runc sets a container's affinity from its cgroup, not from the engine's."""
        mine = sorted(os.sched_getaffinity(0))
        return ",".join(map(str, mine)) if len(mine) < len(online_cpus()) else None

    def run_labels(self, run, **extra) -> dict[str, str]:
        return {**self.engine.labels, RUN_LABEL: run.spec.run_id, **{k: str(v) for k, v in extra.items()}}

    def remove_run_containers(self, run) -> None:
        """Remove the run's containers, and kill any process of theirs the engine lost track of."""
        try:
            self.engine.remove_containers({"label": [f"{RUN_LABEL}={run.spec.run_id}"]})
        finally:
            cgroup = self.engine.run_cgroup(run.spec.run_id)
            if cgroup:
                kill_cgroup_tree(cgroup)

    def try_remove_run_containers(self, run) -> None:
        """:meth:`remove_run_containers` where an error must not hide the run's own."""
        try:
            self.remove_run_containers(run)
        except Exception:
            pass


def online_cpus() -> list[int]:
    """The machine's online CPUs, whatever this process's affinity."""
    cpus = []
    for part in Path("/sys/devices/system/cpu/online").read_text().strip().split(","):
        first, _, last = part.partition("-")
        cpus += range(int(first), int(last or first) + 1)
    return cpus


@contextmanager
def engine_environment(engine):
    """``DOCKER_HOST`` for the SDK code that reads it from the environment
    (docker.from_env in kfp, docker-compose in SageMaker local mode)."""
    old = os.environ.get("DOCKER_HOST")
    os.environ.update(engine.env())
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DOCKER_HOST", None)
        else:
            os.environ["DOCKER_HOST"] = old


def timestamp_ns(text: str | None) -> int | None:
    """Nanoseconds since the epoch of an engine timestamp (RFC 3339, ns digits)."""
    match = STAMP.match(text or "")
    if not match or text.startswith("0001-"):
        return None
    whole, fraction, zone = match.groups()
    zone = "+00:00" if zone in ("", "Z") else zone
    seconds = int(datetime.datetime.fromisoformat(whole + zone).timestamp())
    return seconds * 10**9 + int((fraction or "0")[:9].ljust(9, "0"))


def container_times(attrs: dict) -> dict:
    """Created, started and finished of a container, and its start-up (created to started)."""
    created = timestamp_ns(attrs.get("Created"))
    state = attrs.get("State") or {}
    started = timestamp_ns(state.get("StartedAt"))
    finished = timestamp_ns(state.get("FinishedAt"))
    info = {"created_ns": created, "started_ns": started, "container_finished_ns": finished,
            "container_id": attrs.get("Id", "")[:12], "exit_code": state.get("ExitCode")}
    if created and started:
        info["container_startup_s"] = (started - created) / 1e9
    if started and finished:
        info["container_run_s"] = (finished - started) / 1e9
    return {k: v for k, v in info.items() if v is not None}


def record_containers(engine, run) -> int:
    """Put each of the run's containers' times into the run's task info, by their step labels."""
    found = 0
    with engine.client(timeout=60) as client:
        for container in client.containers.list(all=True, filters={"label": [f"{RUN_LABEL}={run.spec.run_id}"]}):
            labels = container.attrs.get("Config", {}).get("Labels") or {}
            step = labels.get(STEP_LABEL)
            if not step:
                continue
            index = labels.get(INDEX_LABEL)
            run.add_task_info(step, int(index) if index not in (None, "", "None") else None,
                              **container_times(container.attrs))
            found += 1
    return found
