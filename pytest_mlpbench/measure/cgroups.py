"""A cgroup's CPU and memory counters, read from the host's cgroup filesystem.

Container engines run a container's processes outside the test's process
tree, but in a cgroup under the parent they are given. The kernel charges CPU
time and memory to that parent as well, and it keeps counting after a child
cgroup is removed, so a parent made for one run holds that run's exact totals.

On a cgroup v2 host (no v1 controller mounted) the counters are
``cpu.stat`` and ``memory.current``/``memory.peak``; on a v1 or hybrid host,
where engines use the v1 controllers, ``cpuacct.usage`` and
``memory.usage_in_bytes``/``memory.max_usage_in_bytes``. Memory counts the
page cache charged to the cgroup, not only its processes' resident pages;
:meth:`Cgroup.page_cache_bytes` says how much of it is page cache now.
"""
from __future__ import annotations

import os
from pathlib import Path


def cgroup_mounts() -> dict[str, str]:
    """Mount point by controller (v1) or ``"unified"`` (v2), from /proc/mounts."""
    found: dict[str, str] = {}
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, point, kind, options = line.split()[:4]
            if kind == "cgroup2":
                found.setdefault("unified", point)
            elif kind == "cgroup":
                for option in options.split(","):
                    found.setdefault(option, point)
    return found


class Cgroup:
    """Counters of the cgroup at ``path`` (from the hierarchy's root, as given
    to an engine's ``cgroup_parent``); zero while it does not exist yet."""

    def __init__(self, path: str, mounts: dict[str, str] | None = None):
        self.path = path.strip("/")
        mounts = cgroup_mounts() if mounts is None else mounts
        self.v2 = "unified" in mounts and not {"cpuacct", "memory"} & mounts.keys()
        if self.v2:
            self.cpu_dir = self.memory_dir = Path(mounts["unified"], self.path)
        else:
            self.cpu_dir = Path(mounts["cpuacct"], self.path) if "cpuacct" in mounts else None
            self.memory_dir = Path(mounts["memory"], self.path) if "memory" in mounts else None
        self.all_dirs = [Path(point, self.path) for point in set(mounts.values())]

    def cpu_s(self) -> float:
        if self.v2:
            for line in _read(self.cpu_dir, "cpu.stat").splitlines():
                if line.startswith("usage_usec "):
                    return int(line.split()[1]) / 1e6
            return 0.0
        return _number(self.cpu_dir, "cpuacct.usage") / 1e9

    def memory_bytes(self) -> int:
        return _number(self.memory_dir, "memory.current" if self.v2 else "memory.usage_in_bytes")

    def peak_bytes(self) -> int:
        return _number(self.memory_dir, "memory.peak" if self.v2 else "memory.max_usage_in_bytes")

    def page_cache_bytes(self) -> int:
        """Page cache charged to the cgroup and its children now (v1 ``total_cache``, v2 ``file``)."""
        key = "file" if self.v2 else "total_cache"
        for line in _read(self.memory_dir, "memory.stat").splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
        return 0

    def remove(self, tree: bool = True) -> None:
        """Remove the cgroup (and with ``tree`` every cgroup under it) in every
        hierarchy: engines create a parent in all of them. Busy ones stay."""
        for top in self.all_dirs:
            below = [entry[0] for entry in os.walk(top)] if tree else [str(top)]
            for directory in sorted(below, key=len, reverse=True):
                try:
                    os.rmdir(directory)
                except OSError:
                    pass


def _read(directory: Path | None, name: str) -> str:
    if directory is None:
        return ""
    try:
        with open(directory / name) as f:
            return f.read()
    except OSError:
        return ""


def _number(directory: Path | None, name: str) -> int:
    text = _read(directory, name).strip()
    return int(text) if text.isdigit() else 0
