"""The fault matrix (docs/reliability.md): every local architecture against a step
that raises, a step that SIGKILLs its own process, the container engine's
service SIGKILLed mid-run (container architectures), and Ctrl-C mid-run.

Each cell is a real pytest session, run as a child process and watched from
outside: the run must end, well within ``DETECT_BOUND_S`` of the fault (far
below the run's own time limit, 600 s at the smoke scale), as a failed (or
interrupted) run in ``results/runs.jsonl`` whose message names the cause; and
once the session is over nothing of it may be left: no process of its tree or
that it started elsewhere (its containers), no listening port of those, no
cgroup (``mlpbench-<pid>-*``, ``/mlpbench/<session>``) and no mount.

Faults come from the workloads ``raises``, ``selfkill`` and ``await`` of
``fakes.py``: each fault step first leaves a note ``fault-<step>.json`` (when,
which process) in its run's artifacts, which the watcher reads to time the
detection, and to inject the outside faults while ``await_fault`` waits.
The local architectures' matrix runs in three sessions, both container
architectures' in one, and Ctrl-C in one session per architecture; they run
side by side, three at a time (subprocess and airflow-local with PostgreSQL
have their Ctrl-C sessions in test_plugin.py and test_airflow.py).

    pytest tests/test_fault_matrix.py -v -s     # -s prints the measured matrix
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest
from conftest import FAULTS_REGISTER, TESTS, default_sigint

from pytest_mlpbench.architectures import RunFailed, Unavailable
from pytest_mlpbench.architectures.containers.arch import ContainerArchitecture
from pytest_mlpbench.architectures.containers.image import default_cache

#: The local architectures, in the sessions that run their matrix: the ones with servers apart,
#: so that no session is much longer than the others.
LOCAL_SESSIONS = [["airflow-local", "metaflow-local"], ["prefect-local", "mlflow"],
                  ["dagster-local", "inprocess", "subprocess", "kubeflow-local", "dvc"]]
LOCAL = [arch for session in LOCAL_SESSIONS for arch in session]
#: The module's sessions run side by side, this many at a time: each mostly waits on its
#: frameworks, and each is watched by its own paths and run ids. The container Ctrl-C sessions
#: come last, once the container matrix's session has filled the image cache they share.
SIDE_BY_SIDE = 3
CONTAINERS = ["kubeflow-docker", "sagemaker-local"]
CONTAINER_OPTIONS = ["--mlpbench-container-torch=no", f"--mlpbench-image-cache={default_cache()}"]
PODMAN = bool(shutil.which("podman") and shutil.which("runc") and os.geteuid() == 0)

#: From the fault to the end of the failed run. Measured on this 2-core machine, loaded by other
#: test sessions, over two to seven runs of each cell (docs/reliability.md): at most 5.3 s (airflow-local,
#: a raising step: the scheduler's next loop marks the DAG run failed), at most 1.7 s everywhere
#: else. The bound leaves a wide margin and is still far below the run's 600 s time limit.
DETECT_BOUND_S = 45.0
#: From Ctrl-C to the end of the child session (architectures closed, servers stopped):
#: measured at most 7.2 s (sagemaker-local, which stops its Podman service).
SESSION_END_BOUND_S = 60.0
#: From the end of a run to the end of every process that names it (its steps, its containers):
#: measured, all were gone before the run's end (the watcher looks every 0.2 s).
RUN_CLEANUP_BOUND_S = 10.0
#: How long a session may take from start to its faults (starting Airflow, building the step
#: image's top layer, a container per step...); only to keep a broken session from hanging.
SESSION_LIMIT_S = 480.0

NOT_APPLICABLE = "not applicable on inprocess: the step runs in the harness's own process, which SIGKILL would end"
MATRIX_SOURCE = f'''
import pytest


def test_raises(mlpbench):
    mlpbench.run("raises")


def test_selfkill(mlpbench, mlpbench_arch):
    if mlpbench_arch == "inprocess":
        pytest.skip({NOT_APPLICABLE!r})
    mlpbench.run("selfkill")
'''
CONTAINER_SOURCE = MATRIX_SOURCE + '''

def test_engine_killed(mlpbench):  # the watcher SIGKILLs the engine's service while the step waits
    mlpbench.run("await")


def test_after(mlpbench):  # the next benchmark: the service was started again
    mlpbench.run("linear")
'''
CTRL_C_SOURCE = '''
def test_ctrl_c(mlpbench):  # the watcher sends SIGINT to the session while the step waits
    mlpbench.run("await")
'''
NOTES = ("mlpbench-*/runs/*/artifacts/fault-*.json",  # where every architecture but sagemaker-local keeps them
         "mlpbench-*/sagemaker-local/sagemaker/containers/*/output/artifacts/fault-*.json")
SOCKET = re.compile(r"unix://(/tmp/mlpb-[^/\s]+)/podman\.sock")


@dataclass
class Proc:
    pid: int
    created: float
    cmd: str
    ppid: int = 0

    def alive(self) -> bool:
        try:
            proc = psutil.Process(self.pid)
            return proc.create_time() == self.created and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False


@dataclass
class Child:
    """A pytest session in its own process group, watched every ``interval`` seconds."""

    path: Path  # the project: conftest, test module, results
    args: list[str]
    on_note: object = None  # called with each new fault note and this Child
    interval: float = 0.2
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="fm-", dir="/tmp")))
    procs: dict[int, Proc] = field(default_factory=dict)  # every process of ours seen while it ran
    last_seen: dict[int, int] = field(default_factory=dict)  # pid -> wall ns when last seen alive
    ports: set[int] = field(default_factory=set)  # every port they listened on
    cgroups: set[str] = field(default_factory=set)  # the mlpbench cgroups they were in
    short_dirs: set[str] = field(default_factory=set)  # /tmp/mlpb-*: our Podman services' run roots
    services: dict[int, Proc] = field(default_factory=dict)  # our Podman services
    notes: dict[tuple[str, str], dict] = field(default_factory=dict)  # (run_id, step) -> fault note
    injected: dict[str, tuple[int, float, str]] = field(default_factory=dict)  # run_id -> (wall ns, monotonic, what)
    problems: list[str] = field(default_factory=list)

    def start(self, source: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / "conftest.py").write_text(FAULTS_REGISTER)
        (self.path / "test_faults.py").write_text(source)
        env = {**os.environ, "TMPDIR": str(self.scratch),  # the session's scratch directory goes there
               "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-rs", "--mlpbench-scale=smoke",
               "--mlpbench-rounds=1", "--mlpbench-warmup=0", "--mlpbench-keep-artifacts=no", *self.args]
        self.log = self.path / "session.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(cmd, cwd=self.path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True, preexec_fn=default_sigint)
        self.started = time.monotonic()
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def wait(self, limit_s: float = SESSION_LIMIT_S) -> None:
        try:
            self.proc.wait(timeout=max(1.0, limit_s - (time.monotonic() - self.started)))
        except subprocess.TimeoutExpired:
            self.problems.append(f"the session did not end within {limit_s:g} s")
            self.kill()
        self.ended = time.monotonic()
        self.watcher.join(timeout=10)

    def kill(self) -> None:
        """Only when the session hangs: end everything of ours that is still there."""
        for proc in [*self.procs.values(), Proc(self.proc.pid, 0, "")]:
            with contextlib.suppress(psutil.Error, OSError):
                os.kill(proc.pid, signal.SIGKILL)
        self.proc.wait()

    def output(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def runs(self) -> dict[tuple[str, str], dict]:
        """The session's run records by (architecture, workload)."""
        path = self.path / "results" / "runs.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return {(r["architecture"], r["workload"]): r for r in map(json.loads, lines)}

    # -- watching ---------------------------------------------------------------------------------

    def markers(self) -> list[str]:
        return [str(self.path), str(self.scratch), *self.short_dirs, *(run for run, _ in self.notes)]

    def _watch(self) -> None:
        tick = 0
        while self.proc.poll() is None:
            try:
                self.scan(ports=tick % 5 == 0)
                self.read_notes()
            except Exception as exc:  # a watcher error must not pass for a clean run
                self.problems.append(f"watcher: {exc!r}")
            tick += 1
            time.sleep(self.interval)

    def scan(self, ports: bool = False) -> list[Proc]:
        """Our processes now: the session's tree, and every process whose working
        directory or command line names the project, the scratch directory, a
        Podman run root of ours or a run of ours, with their descendants."""
        markers, table, found = self.markers(), {}, {}
        for proc in psutil.process_iter(["pid", "ppid", "cmdline", "cwd", "create_time"]):
            info = proc.info
            table[info["pid"]] = info
            cmd = " ".join(info["cmdline"] or [])
            if info["pid"] == self.proc.pid or any(m in cmd or m in (info["cwd"] or "") for m in markers):
                found[info["pid"]] = Proc(info["pid"], info["create_time"], cmd[:300], info["ppid"])
        children: dict[int, list[int]] = {}
        for info in table.values():
            children.setdefault(info["ppid"], []).append(info["pid"])
        todo = list(found)
        while todo:
            for pid in children.get(todo.pop(), []):
                if pid not in found and pid in table:
                    info = table[pid]
                    found[pid] = Proc(pid, info["create_time"], " ".join(info["cmdline"] or [])[:300], info["ppid"])
                    todo.append(pid)
        found.pop(os.getpid(), None)
        now = time.time_ns()
        for proc in found.values():
            self.last_seen[proc.pid] = now
            if proc.pid not in self.procs:
                self.procs[proc.pid] = proc
                self.cgroups |= cgroups_of(proc.pid)
            if "system service" in proc.cmd and str(self.scratch) in proc.cmd and proc.ppid not in self.services:
                self.services.setdefault(proc.pid, proc)  # not the service's own helpers, which share its command line
                self.short_dirs |= set(SOCKET.findall(proc.cmd))
        if ports:
            self.ports |= listening_ports(set(found))
        return list(found.values())

    def read_notes(self) -> None:
        for pattern in NOTES:
            for path in self.scratch.glob(pattern):
                try:
                    note = json.loads(path.read_text())
                except (OSError, ValueError):
                    continue  # being written: next time
                key = (note["run_id"], note["step"])
                if key not in self.notes:
                    self.notes[key] = note
                    if self.on_note:
                        self.on_note(note, self)

    def inject(self, note: dict, what: str, pid: int, sig: int = signal.SIGKILL, group: bool = False) -> None:
        self.injected[note["run_id"]] = (time.time_ns(), time.monotonic(), what)
        (os.killpg if group else os.kill)(pid, sig)

    # -- what is left -----------------------------------------------------------------------------

    def leftovers(self, grace_s: float = 3.0) -> list[str]:
        """Everything of ours still there once the session ended (after ``grace_s``
        for processes that were already dying)."""
        deadline = time.monotonic() + grace_s
        while True:
            alive = {p.pid: p for p in self.procs.values() if p.alive()}
            alive.update({p.pid: p for p in self.scan() if p.alive()})
            if not alive or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        left = [f"process {p.pid}: {p.cmd[:200]}" for p in alive.values()]
        left += [f"port {port} still listening" for port in sorted(self.ports & listening_ports(None))]
        left += [f"cgroup {path}" for path in self.cgroups_left()]
        with open("/proc/mounts") as mounts:
            left += [f"mount {line.split()[1]}" for line in mounts
                     if any(m in line.split()[1] for m in (str(self.scratch), str(self.path), *self.short_dirs))]
        left += [f"directory {d}" for d in [*self.scratch.glob("mlpbench-*"), *map(Path, self.short_dirs)] if d.exists()]
        return left + self.problems

    def cgroups_left(self) -> list[str]:
        """Run cgroups of the session's process (``mlpbench-<pid>-<n>``), and the
        container cgroups we saw our processes in, with their session's parent."""
        names = {f"mlpbench-{self.proc.pid}-"}
        wanted = set(self.cgroups) | {"/".join(c.split("/")[:3]) for c in self.cgroups if c.startswith("/mlpbench/")}
        left = []
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            for root, dirs, _ in os.walk(hierarchy):
                for name in dirs:
                    path = f"{root}/{name}"[len(str(hierarchy)):]
                    if any(name.startswith(n) for n in names) or path in wanted:
                        left.append(f"{hierarchy.name}:{path}")
        return left

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


def cgroups_of(pid: int) -> set[str]:
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return set()
    return {line.split(":", 2)[2] for line in lines if "mlpbench" in line}


def listening_ports(pids: set[int] | None) -> set[int]:
    """Ports listened on by ``pids`` (by anyone: None)."""
    return {c.laddr.port for c in psutil.net_connections("inet")
            if c.status == psutil.CONN_LISTEN and (pids is None or c.pid in pids)}


def outlived_s(child: Child, record: dict) -> float | None:
    """How long after the run's end a process naming the run (a step's, a container's) was still
    seen, within the watcher's interval; None where none was seen (the harness's own steps)."""
    seen = [child.last_seen[p.pid] for p in child.procs.values() if record["run_id"] in p.cmd]
    return (max(seen) - record["end_ns"]) / 1e9 if seen else None


def detection_s(child: Child, record: dict) -> float:
    """From the fault (the step's own note, or the moment we injected it) to the run's end."""
    injected = child.injected.get(record["run_id"])
    if injected:
        fault_ns = injected[0]
    else:
        (note,) = [n for (run, _), n in child.notes.items() if run == record["run_id"]]
        fault_ns = note["ns"]
    return (record["end_ns"] - fault_ns) / 1e9


MEASURED: list[str] = []  # one line per cell, printed at the end of the module (-s)


def report(fault: str, arch: str, child: Child, record: dict | None, seconds: float | None, extra: str = "") -> None:
    outcome = record["outcome"] if record else "no record"
    error = (record or {}).get("error") or ""
    outlived = outlived_s(child, record) if record else None
    MEASURED.append(f"| {fault} | {arch} | {outcome} | {'-' if seconds is None else f'{seconds:.2f}'} | "
                    f"{'-' if outlived is None else f'{outlived:.1f}'} | {len(child.left) or 'none'} | "
                    f"{error.splitlines()[0][:110] if error else ''}{extra} |")


@pytest.fixture(scope="module", autouse=True)
def print_matrix():
    yield
    if MEASURED:
        print("\n| fault | architecture | outcome | detect (s) | run's processes outlived it (s) | left | message |"
              "\n|---|---|---|---|---|---|---|")
        print("\n".join(MEASURED))


# -- a step raises, a step SIGKILLs itself: every local architecture in one session ----------------


@pytest.fixture(scope="module")
def children(tmp_path_factory):
    """Every session of the module, run side by side (``SIDE_BY_SIDE`` at a time): first the
    matrix's (by architecture) and the local Ctrl-C ones, then, once the container session has
    filled the image cache, the container Ctrl-C ones (by (architecture, whole group))."""
    def child(name, archs, on_note=None, options=()):
        return Child(tmp_path_factory.mktemp(name), [f"--mlpbench-arch={','.join(archs)}", *options], on_note)

    matrix, interrupted, first, then = {}, {}, [], []
    if PODMAN:
        containers = child("containers", CONTAINERS, container_faults,
                           ["--mlpbench-container-engine=podman", *CONTAINER_OPTIONS])
        matrix.update(dict.fromkeys(CONTAINERS, containers))
        first.append((containers, CONTAINER_SOURCE))
    for archs in LOCAL_SESSIONS:
        matrix.update(dict.fromkeys(archs, child("local", archs)))
        first.append((matrix[archs[0]], MATRIX_SOURCE))
    for arch, group in [*LOCAL_CTRL_C, *(CONTAINER_CTRL_C if PODMAN else [])]:
        options = CONTAINER_OPTIONS if arch in CONTAINERS else []
        interrupted[arch, group] = child("ctrl-c", [arch], ctrl_c(group), options)
        (then if arch in CONTAINERS else first).append((interrupted[arch, group], CTRL_C_SOURCE))
    try:
        run_side_by_side(first, SIDE_BY_SIDE)
        run_side_by_side(then, SIDE_BY_SIDE)
        yield matrix, interrupted
    finally:
        for each, _ in first + then:
            if getattr(each, "proc", None) is not None and each.proc.poll() is None:
                each.kill()
            each.close()


def run_side_by_side(jobs: list[tuple[Child, str]], at_once: int) -> None:
    """Run each child session on its source, ``at_once`` at a time, and take what each left."""
    waiting, running = list(jobs), []
    while waiting or running:
        while waiting and len(running) < at_once:
            child, source = waiting.pop(0)
            child.start(source)
            running.append(child)
        for child in list(running):
            if child.proc.poll() is not None or time.monotonic() - child.started > SESSION_LIMIT_S:
                child.wait()
                child.left = child.leftovers()
                running.remove(child)
        time.sleep(0.2)


@pytest.fixture(scope="module")
def matrix(children):
    """The session that ran each architecture's matrix."""
    return children[0]


#: What a run's message must say (regular expressions): the step's name and its error, or the signal.
CAUSES = {
    "raises": [r"\bexplode\b", "RuntimeError", "this step raises on purpose"],
    "selfkill": [r"\bself_kill\b", r"\bSIGKILL\b"],
}
#: Prefect runs tasks in a pool of processes (ProcessPoolTaskRunner), whose Python does not
#: report how one of them died: the message names the step and that its process was killed.
CAUSES_PREFECT_SELFKILL = [r"\bself_kill\b", "terminated abruptly"]


def check_cell(child: Child, fault: str, arch: str, workload: str, causes: list[str], outcome: str = "failed",
               extra: str = "") -> dict:
    record = child.runs().get((arch, workload))
    seconds = detection_s(child, record) if record else None
    report(fault, arch, child, record, seconds, extra)
    assert record, f"no run of {workload!r} on {arch} was recorded:\n{child.output()}"
    assert record["outcome"] == outcome, record["error"]
    for cause in causes:
        assert re.search(cause, record["error"]), f"{cause!r} is not in the message:\n{record['error']}"
    assert seconds < DETECT_BOUND_S, f"{arch}: the run ended {seconds:.1f} s after the fault"
    assert (outlived_s(child, record) or 0) < RUN_CLEANUP_BOUND_S, f"{arch}: the run's processes outlived it"
    assert not child.left, f"left after the session: {child.left}"
    return record


@pytest.mark.parametrize("arch", LOCAL)
def test_a_raising_step_fails_the_run_with_its_name_and_error(matrix, arch):
    record = check_cell(matrix[arch], "step raises", arch, "raises", CAUSES["raises"])
    assert [(s["step"], s["outcome"]) for s in record["steps"]] == [("begin", "passed"), ("explode", "failed")]


@pytest.mark.parametrize("arch", [
    pytest.param("inprocess", marks=pytest.mark.skip(reason=NOT_APPLICABLE)),
    *[arch for arch in LOCAL if arch != "inprocess"]])
def test_a_step_that_sigkills_itself_fails_the_run_naming_step_and_signal(matrix, arch):
    causes = CAUSES_PREFECT_SELFKILL if arch == "prefect-local" else CAUSES["selfkill"]
    record = check_cell(matrix[arch], "step SIGKILL", arch, "selfkill", causes)
    assert [(s["step"], s["outcome"]) for s in record["steps"]] == [("begin", "passed")]  # the killed step wrote none


def test_inprocess_says_why_it_has_no_sigkill_cell(matrix):
    output = matrix["inprocess"].output(50000)
    assert re.search(r"SKIPPED \[1\] test_faults.py:\d+: " + re.escape(NOT_APPLICABLE), output), output[-4000:]


# -- the container architectures: the same, and their engine's service SIGKILLed mid-run ----------


def container_faults(note: dict, child: Child) -> None:
    """While ``await_fault`` waits: SIGKILL the session's Podman service. A
    ``self_kill`` step that is PID 1 of its container cannot kill itself: kill
    its process from the host, as the kernel lets only an outside process."""
    if note["step"] == "await_fault":
        services = [p for p in child.scan() if p.pid in child.services and p.alive()]
        if len(services) != 1:
            child.problems.append(f"{note['run_id']}: expected one Podman service of ours, found {services}")
            return
        child.inject(note, f"SIGKILL to the Podman service {services[0].pid}", services[0].pid)
    elif note["step"] == "self_kill" and note["pid"] == 1:
        time.sleep(0.5)  # past its own, ignored, SIGKILL
        steps = [p for p in child.scan() if note["run_id"] in p.cmd and "pytest_mlpbench.step" in p.cmd.split(" ", 3)[2]]
        if len(steps) != 1:
            child.problems.append(f"{note['run_id']}: expected one step process, found {steps}")
            return
        child.inject(note, f"SIGKILL from the host to the step's process {steps[0].pid}", steps[0].pid)


needs_podman = pytest.mark.skipif(not PODMAN, reason="needs Podman and runc, as root")


@pytest.fixture(scope="module")
def container_session(matrix):
    return matrix[CONTAINERS[0]]


@needs_podman
@pytest.mark.parametrize("arch", CONTAINERS)
def test_container_step_raises_or_is_sigkilled(container_session, arch):
    check_cell(container_session, "step raises", arch, "raises", CAUSES["raises"])
    killer = container_session.injected.get(container_session.runs()[(arch, "selfkill")]["run_id"])
    check_cell(container_session, "step SIGKILL", arch, "selfkill", CAUSES["selfkill"],
               extra=f" (fault: {killer[2]}, as it is PID 1 of its container)" if killer else "")


@needs_podman
@pytest.mark.parametrize("arch", CONTAINERS)
def test_a_killed_engine_fails_the_run_at_once_and_restarts_for_the_next(container_session, arch):
    record = check_cell(container_session, "Podman service SIGKILL", arch, "await",
                        ["Podman API service", "was killed by SIGKILL", "during the run"])
    assert container_session.injected[record["run_id"]][2].startswith("SIGKILL to the Podman service")
    after = container_session.runs()[(arch, "linear")]
    assert after["outcome"] == "passed", after["error"]  # the next benchmark, on a new service
    what = container_session.injected[record["run_id"]][2]
    killed = container_session.services[int(what.rsplit(" ", 1)[1])]
    # psutil's start times are whole seconds of boot time off: compare with the killed service's, not the clock
    restarted = [p for p in container_session.services.values()
                 if p.created > killed.created and SOCKET.findall(p.cmd) == SOCKET.findall(killed.cmd)]
    assert restarted, f"no new Podman service on the same socket: {container_session.services}"


class _DeadEngine:
    kind = "podman"

    def failure(self):
        return "the Podman API service (pid 1234) was killed by SIGKILL"

    def restart(self):
        raise Unavailable("the Podman API service did not answer at unix:///tmp/x.sock (no such socket)")


def test_an_engine_that_does_not_restart_makes_the_architecture_unavailable_with_the_reason():
    arch = ContainerArchitecture()
    arch.name, arch.engine = "kubeflow-docker", _DeadEngine()
    expected = ("kubeflow-docker: the Podman API service (pid 1234) was killed by SIGKILL, and it did not restart: "
                "the Podman API service did not answer")
    for _ in range(2):  # and stays so for the rest of the session
        with pytest.raises(Unavailable, match=re.escape(expected)):
            arch.check_workload(None)
    with pytest.raises(RunFailed, match=re.escape(expected)):
        arch.check_engine(None)


# -- Ctrl-C: one session per architecture ----------------------------------------------------------

#: (architecture, whole process group): SIGINT to the session's process, for every architecture;
#: and, where the architecture leaves processes in the test's own process group (kfp.local's
#: tasks, MLflow's step commands; SageMaker's Compose until it got a session of its own), also to
#: the whole group, as a terminal sends Ctrl-C.
LOCAL_CTRL_C = [("prefect-local", False), ("dagster-local", False), ("mlflow", True), ("mlflow", False),
                ("metaflow-local", False), ("kubeflow-local", False), ("kubeflow-local", True), ("dvc", False),
                ("inprocess", False)]
CONTAINER_CTRL_C = [("sagemaker-local", False), ("sagemaker-local", True), ("kubeflow-docker", False)]
CTRL_C = [*LOCAL_CTRL_C, *[pytest.param(*cell, marks=needs_podman) for cell in CONTAINER_CTRL_C]]


def ctrl_c(group: bool):
    """SIGINT while ``await_fault`` waits: to the session's process only (the harness must stop
    everything itself), or to its whole process group, as a terminal sends Ctrl-C."""
    def inject(note: dict, child: Child) -> None:
        if note["step"] == "await_fault":
            time.sleep(0.5)
            child.inject(note, f"SIGINT to the session's {'process group' if group else 'process'}", child.proc.pid,
                         signal.SIGINT, group=group)
    return inject


@pytest.mark.parametrize("arch, group", CTRL_C, ids=lambda value: {False: "pid", True: "group"}.get(value, value))
def test_ctrl_c_mid_run_records_the_run_and_leaves_nothing(children, arch, group):
    child = children[1][arch, group]
    record = child.runs().get((arch, "await"))
    injected = child.injected.get(record["run_id"]) if record else None
    session_end_s = child.ended - injected[1] if injected else None
    report("Ctrl-C" + (" (process group)" if group else ""), arch, child, record,
           detection_s(child, record) if injected else None,
           f" (session ended {session_end_s:.2f} s after Ctrl-C)" if injected else "")
    output = child.output()
    assert injected, f"the step never started ({child.ended - child.started:.0f} s):\n{output}"
    assert "KeyboardInterrupt" in output and "Traceback" not in output, output
    assert record["outcome"] == "interrupted" and "KeyboardInterrupt" in record["error"], record["error"]
    assert detection_s(child, record) < DETECT_BOUND_S
    assert (outlived_s(child, record) or 0) < RUN_CLEANUP_BOUND_S
    assert session_end_s < SESSION_END_BOUND_S
    assert not child.left, f"left after the session: {child.left}"
