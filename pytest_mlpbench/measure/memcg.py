"""A memory cgroup made for one run, so the kernel itself keeps the run's peak.

The run's processes are moved into a fresh memory cgroup at the start; the
children they start inherit it. Pages charged before the move stay charged
where they were (cgroup v1 without ``move_charge_at_immigrate``, and v2
always), so the cgroup counts exactly what the run newly charges: its peak
counter (``memory.max_usage_in_bytes``, ``memory.peak``) is the highest
concurrent total of that, however short-lived, never missed between samples.

Cgroup v1: the cgroup is made under the test process's own memory cgroup.
Cgroup v2: a cgroup with processes cannot give its children controllers, so
it is made beside the test process's cgroup, under the parent that gives the
memory controller to its children (or under the root cgroup). Where neither
works (not root, read-only cgroupfs, v2 without delegation)
:meth:`RunMemcg.create` answers ``None`` and the monitor samples instead.
"""
from __future__ import annotations

import itertools
import os
import posixpath
from pathlib import Path

from pytest_mlpbench.measure.cgroups import Cgroup, cgroup_mounts

PREFIX = "mlpbench-"
_serial = itertools.count()


def memory_hierarchy(mounts: dict[str, str]) -> tuple[str, str] | None:
    """(mount point, ``"v1"`` or ``"v2"``) of the memory controller, if any."""
    if "memory" in mounts:
        return mounts["memory"], "v1"
    if "unified" in mounts and "memory" in _read(Path(mounts["unified"], "cgroup.controllers")).split():
        return mounts["unified"], "v2"
    return None


def memcg_of(pid: int, version: str) -> str | None:
    """The memory cgroup of a process, from its ``/proc/PID/cgroup``; None once it ended."""
    for line in _read(Path(f"/proc/{pid}/cgroup")).splitlines():
        hierarchy, controllers, path = line.split(":", 2)
        if (version == "v1" and "memory" in controllers.split(",")) or (version == "v2" and hierarchy == "0"):
            return path
    return None


class RunMemcg(Cgroup):
    """A memory cgroup holding a run's processes; :meth:`close` puts them back and removes it."""

    def __init__(self, mount: str, version: str, path: str, home: str):
        super().__init__(path, {"memory" if version == "v1" else "unified": mount})
        self.version = version
        self.mount = mount
        self.home = home  # where the test process came from, and where new processes go at the end
        self.origin: dict[int, str] = {}  # pid -> the memory cgroup it came from
        usage = "memory.current" if self.v2 else "memory.usage_in_bytes"
        self._current: int | None = os.open(self.memory_dir / usage, os.O_RDONLY)  # None once closed

    @classmethod
    def create(cls, root: int) -> RunMemcg | None:
        """Make an empty run cgroup for the tree of ``root``; None where none can be made."""
        found = memory_hierarchy(cgroup_mounts())
        home = found and memcg_of(root, found[1])
        if not home:
            return None
        mount, version = found
        parent = home if version == "v1" or home == "/" else posixpath.dirname(home)
        if version == "v2" and "memory" not in _read(Path(mount, parent.lstrip("/"), "cgroup.subtree_control")).split():
            return None
        _remove_abandoned(Path(mount, parent.lstrip("/")))
        path = posixpath.join(parent, f"{PREFIX}{os.getpid()}-{next(_serial)}")
        directory = Path(mount, path.lstrip("/"))
        try:
            os.mkdir(directory)
        except OSError:
            return None
        if version == "v2" and not (directory / "memory.peak").exists():  # kernels before 5.19 keep no peak
            os.rmdir(directory)
            return None
        return cls(mount, version, path, home)

    def memory_bytes(self) -> int:
        """The memory charged now (zero once closed), read on every sample
        through a descriptor kept open."""
        return 0 if self._current is None else int(os.pread(self._current, 32, 0))

    def adopt(self, pids) -> None:
        """Move processes in; those that ended meanwhile are skipped, any
        other refusal raises :class:`OSError`."""
        for pid in pids:
            origin = memcg_of(pid, self.version)
            if origin is None or pid in self.origin:
                continue
            try:
                _write_pid(self.memory_dir, pid)
            except ProcessLookupError:
                continue
            self.origin[pid] = origin

    def close(self) -> None:
        """Move the processes still inside back where they came from (those
        the run started, to the test process's cgroup) and remove the cgroup.
        Tries again while processes still fork into it."""
        if self._current is not None:
            os.close(self._current)
            self._current = None
        for _ in range(10):
            for pid in map(int, _read(self.memory_dir / "cgroup.procs").split()):
                for target in (self.origin.get(pid, self.home), self.home):  # an origin may be gone
                    try:
                        _write_pid(Path(self.mount, target.lstrip("/")), pid)
                        break
                    except OSError:
                        pass
            try:
                os.rmdir(self.memory_dir)
                return
            except FileNotFoundError:
                return
            except OSError:
                continue


def _remove_abandoned(parent: Path) -> None:
    """Remove empty run cgroups left by a process that was killed before it closed them."""
    for entry in parent.glob(f"{PREFIX}*-*"):
        pid = entry.name[len(PREFIX):].split("-")[0]
        if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            # deepest first: a session run inside a run made its own cgroups under it
            for directory in sorted((d for d, _, _ in os.walk(entry)), key=len, reverse=True):
                try:
                    os.rmdir(directory)
                except OSError:
                    pass


def _write_pid(directory: Path, pid: int) -> None:
    fd = os.open(directory / "cgroup.procs", os.O_WRONLY)
    try:
        os.write(fd, str(pid).encode())
    finally:
        os.close(fd)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""
