"""The session's container engine, reached through the Docker API.

The user's Docker engine where ``$DOCKER_HOST`` (or ``--mlpbench-docker-host``)
or the default socket answers; otherwise a Podman API service started for the
session, its whole state (storage, run root, configuration, networks) under
the session directory, stopped at the end with every container and mount it
made. Every container we start carries the label ``mlpbench.session``.

Where the engine runs on this machine with the ``cgroupfs`` driver (our Podman
always does), every run's containers go under a cgroup of their own,
``/mlpbench/<session>/<run>``, which the monitor reads for their CPU and memory.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mlpbench.architectures.base import Unavailable, kill_group, tail
from pytest_mlpbench.architectures.subprocesses import exit_reason
from pytest_mlpbench.measure.cgroups import Cgroup, cgroup_mounts

DEFAULT_SOCKET = "unix:///var/run/docker.sock"
SESSION_LABEL = "mlpbench.session"
CGROUP_TOP = "/mlpbench"
PING_TIMEOUT_S = 5.0
START_TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 60.0
#: How often a Docker engine we did not start is asked whether it still answers, while a run is under way.
DOCKER_CHECK_S = 2.0
#: Podman 4.3 on a hybrid cgroup v1/v2 host: crun fails, and the default
#: ulimits make runc's setrlimit fail with "Operation not permitted".
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
netns = "host"
log_driver = "k8s-file"

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{dir}/events.log"
tmp_dir = "{dir}/tmp"
volume_path = "{dir}/root/volumes"

[network]
network_config_dir = "{dir}/networks"
"""
STORAGE_CONF = """\
[storage]
driver = "overlay"
graphroot = "{root}"
runroot = "{runroot}"

[storage.options]
additionalimagestores = [{stores}]
"""


@dataclass
class Engine:
    kind: str  # "docker" or "podman"
    url: str  # Docker API endpoint, unix://...
    dir: Path | None = None  # podman: the session's engine state
    short_dir: Path | None = None  # podman: run root and socket (podman wants a run root under 50 characters)
    image_store: Path | None = None  # podman: the cache's image store, read-only to the service
    service: subprocess.Popen | None = None
    session_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: Why the containers' CPU and memory are not counted; None where they are.
    unaccounted: str | None = None
    _checked: tuple[float, str | None] = (0.0, None)  # docker: (when, what) of the last ping

    def failure(self) -> str | None:
        """Why the engine can no longer run our containers (its service died,
        and how), or None while it can. Cheap enough to ask every fraction of
        a second: a poll of the Podman service we started; for a Docker
        engine, a ping at most every ``DOCKER_CHECK_S``."""
        if self.kind == "podman":
            if self.service is None or (code := self.service.poll()) is None:
                return None
            return f"the Podman API service (pid {self.service.pid}) {exit_reason(code)}"
        when, what = self._checked
        if time.monotonic() - when >= DOCKER_CHECK_S:
            error = ping(self.url)
            what = None if error is None else f"the Docker engine at {self.url} stopped answering ({error})"
            self._checked = (time.monotonic(), what)
        return what

    def start_service(self) -> None:
        """Start ``podman system service`` on our socket and wait until it answers."""
        log = self.dir / "service.log"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.url[len("unix://"):])  # a killed service leaves its socket behind
        with open(log, "ab") as out:
            self.service = subprocess.Popen(
                self.podman_cli("system", "service", "--time=0", self.url), env=self.podman_env(),
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while (error := ping(self.url)) is not None:
            if self.service.poll() is not None or time.monotonic() > deadline:
                raise Unavailable(f"the Podman API service did not answer at {self.url} ({error}):\n{tail(log, 10)}")
            time.sleep(0.1)

    def restart(self) -> None:
        """Start the Podman service again after it died, on the same socket and
        state (the images stay), once what the dead one left is gone: its
        containers, their processes and mounts. :class:`Unavailable` if it
        does not answer again."""
        if self.kind != "podman" or self.service is None:
            raise Unavailable(f"cannot restart a {self.kind} engine we did not start")
        kill_group(self.service)
        self.remove_containers()  # through the CLI: no service answers
        if self.cgroup_root:  # no run is under way: whatever is still in our cgroups is left over
            kill_cgroup_tree(self.cgroup_root)
        try:
            self.start_service()
        except Unavailable:
            kill_group(self.service)
            raise

    @property
    def cgroup_root(self) -> str | None:
        return None if self.unaccounted else f"{CGROUP_TOP}/{self.session_id}"

    def run_cgroup(self, run_id: str) -> str | None:
        """The cgroup parent of a run's containers, where they are counted."""
        return f"{self.cgroup_root}/{run_id}" if self.cgroup_root else None

    @property
    def labels(self) -> dict[str, str]:
        return {SESSION_LABEL: self.session_id}

    @contextlib.contextmanager
    def client(self, timeout: float = 120.0):
        import docker

        client = docker.DockerClient(base_url=self.url, timeout=timeout)
        try:
            yield client
        finally:
            client.close()

    def env(self) -> dict[str, str]:
        """Variables for tools that talk to the engine (docker-compose, docker SDK)."""
        return {"DOCKER_HOST": self.url}

    def podman_env(self) -> dict[str, str]:
        return {**os.environ, "CONTAINERS_CONF": str(self.dir / "containers.conf"),
                "CONTAINERS_STORAGE_CONF": str(self.dir / "storage.conf")}

    def pids(self) -> list[int]:
        """Processes of the engine the monitor should watch (with their descendants)."""
        return [self.service.pid] if self.service and self.service.poll() is None else []

    def remove_containers(self, filters: dict | None = None) -> int:
        """Force-remove this session's containers (those matching ``filters`` too);
        through the Podman CLI where the service we started is gone."""
        labels = [f"{k}={v}" for k, v in self.labels.items()] + (filters or {}).get("label", [])
        if self.kind == "podman" and self.service is not None and self.service.poll() is not None:
            return self._remove_containers_cli(labels)
        removed = 0
        with self.client(timeout=CLI_TIMEOUT_S) as client:
            for container in client.containers.list(all=True, filters={**(filters or {}), "label": labels}):
                try:
                    container.remove(force=True)
                    removed += 1
                except Exception:  # already gone (podman answers 500 where Docker says 404)
                    pass
        return removed

    def _remove_containers_cli(self, labels: list[str]) -> int:
        """``podman rm --force`` (which stops them first) of the containers with all ``labels``."""
        filters = [arg for label in labels for arg in ("--filter", f"label={label}")]
        listed = subprocess.run(self.podman_cli("ps", "--all", "--quiet", *filters), env=self.podman_env(),
                                capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        ids = listed.stdout.split()
        if ids:
            subprocess.run(self.podman_cli("rm", "--force", "--time=0", *ids), env=self.podman_env(),
                           capture_output=True, timeout=CLI_TIMEOUT_S)
        return len(ids)

    def close(self) -> None:
        """Remove our containers and cgroups; stop a service we started and undo its mounts."""
        if self.kind == "docker":
            _quietly(self.remove_containers)
            self.remove_cgroups()
            return
        if self.service is None:
            return
        _quietly(self.remove_containers)
        kill_group(self.service)
        self.service = None
        _quietly(lambda: subprocess.run(self.podman_cli("rm", "--all", "--force"), env=self.podman_env(),
                                        capture_output=True, timeout=CLI_TIMEOUT_S))
        unmount_under(self.dir)
        unmount_under(self.short_dir)
        shutil.rmtree(self.short_dir, ignore_errors=True)
        self.remove_cgroups()

    def remove_cgroups(self) -> None:
        if self.cgroup_root:
            kill_cgroup_tree(self.cgroup_root)
            Cgroup(self.cgroup_root).remove()
            Cgroup(CGROUP_TOP).remove(tree=False)  # where no other session uses it

    def podman_cli(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.dir / "root"), "--runroot", str(self.short_dir / "run"), *args]


def kill_cgroup_tree(path: str, wait_s: float = 5.0) -> list[int]:
    """SIGKILL every process in cgroup ``path`` and below, in every hierarchy,
    until none is left (at most ``wait_s``); return their pids. Removing a
    container that is being stopped (Compose's own stop on Ctrl-C) can make
    Podman 4.3 forget it while its processes and its conmon run on: they are
    still in the cgroup we gave them."""
    tops = [Path(point, path.strip("/")) for point in set(cgroup_mounts().values())]
    killed: set[int] = set()
    deadline = time.monotonic() + wait_s
    while True:
        pids = set()
        for top in tops:
            for directory, _, _ in os.walk(top):
                with contextlib.suppress(OSError):
                    pids |= {int(pid) for pid in Path(directory, "cgroup.procs").read_text().split()}
        if not pids or time.monotonic() > deadline:
            return sorted(killed)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
        time.sleep(0.1)


def _quietly(fn) -> None:
    try:
        fn()
    except Exception:
        pass


def open_engine(session_dir: Path, options=None, image_store: Path | None = None) -> Engine:
    """The engine the options ask for; raise :class:`Unavailable` saying why not."""
    choice = (options.get("container_engine") if options else None) or "auto"
    host = (options.get("docker_host") if options else None) or os.environ.get("DOCKER_HOST")
    if choice in ("auto", "docker"):
        url = host or DEFAULT_SOCKET
        error = ping(url)
        if error is None:
            return Engine("docker", url, unaccounted=docker_unaccounted(url))
        if choice == "docker":
            raise Unavailable(f"no Docker engine answers at {url} ({error}); start it, or set "
                              "--mlpbench-docker-host / $DOCKER_HOST, or --mlpbench-container-engine=podman")
    return start_podman(Path(session_dir) / "podman", image_store)


def docker_unaccounted(url: str) -> str | None:
    """Why a Docker engine's containers cannot be counted through cgroups, or None."""
    if not url.startswith("unix://"):
        return f"the Docker engine at {url} may run on another machine"
    try:
        with Engine("docker", url).client(timeout=PING_TIMEOUT_S) as client:
            driver = client.info().get("CgroupDriver")
    except Exception as exc:
        return f"the Docker engine at {url} did not name its cgroup driver ({type(exc).__name__}: {exc})"
    if driver != "cgroupfs":
        return (f"Docker's {driver} cgroup driver names cgroups as systemd slices; run dockerd with "
                "--exec-opt native.cgroupdriver=cgroupfs to count them")
    return None


def ping(url: str) -> str | None:
    """None when the Docker API at ``url`` answers, else why not."""
    if url.startswith("unix://") and not os.path.exists(url[len("unix://"):]):
        return "no such socket"
    try:
        import docker

        client = docker.DockerClient(base_url=url, timeout=PING_TIMEOUT_S)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def check_podman() -> None:
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing:
        raise Unavailable(f"no container engine: no Docker engine answers and {' and '.join(missing)} "
                          "not installed (apt-get install podman runc docker-compose), or set "
                          "--mlpbench-docker-host")
    if os.geteuid() != 0:
        raise Unavailable("no container engine: no Docker engine answers, and Podman here runs containers "
                          "as root only (runc on a hybrid cgroup setup); run as root or set --mlpbench-docker-host")


def write_podman_config(state: Path, short: Path, image_store: Path | None) -> None:
    for sub in ("root", "tmp", "networks"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    (state / "containers.conf").write_text(CONTAINERS_CONF.format(dir=state))
    (state / "storage.conf").write_text(STORAGE_CONF.format(root=state / "root", runroot=short / "run",
                                                            stores=f'"{image_store}"' if image_store else ""))


def start_podman(state: Path, image_store: Path | None = None) -> Engine:
    """Start ``podman system service`` on a socket under ``state``."""
    check_podman()
    short = Path(tempfile.mkdtemp(prefix="mlpb-", dir="/tmp"))
    if image_store is not None and not (image_store / "overlay-images").is_dir():
        image_store = None  # nothing published yet
    write_podman_config(state, short, image_store)
    engine = Engine("podman", f"unix://{short / 'podman.sock'}", dir=state, short_dir=short, image_store=image_store)
    try:
        engine.start_service()
    except BaseException:
        engine.close()
        raise
    return engine


def unmount_under(path: Path | None) -> list[str]:
    """Lazily unmount every mount point under ``path``, deepest first."""
    if path is None:
        return []
    prefix = str(Path(path).resolve())
    points = [p for p in mount_points() if p == prefix or p.startswith(prefix + "/")]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, timeout=CLI_TIMEOUT_S)
    return points


def mount_points() -> list[str]:
    with open("/proc/mounts") as mounts:
        return [line.split()[1].replace("\\040", " ") for line in mounts]
