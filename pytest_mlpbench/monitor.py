"""The monitor: samples the process tree of a run in a daemon thread.

The tree is the test process and every descendant, servers an architecture
started for the session included, plus any extra root an architecture hands
over (a container engine's service is not our child). Sampling gives the
time series and the tree's summed RSS; the kernel's exact figures cover what
sampling misses: rusage of reaped children, per-process CPU counters of live
ones and each process's high-water mark (VmHWM).

Containers run outside that tree (their engine's shim is a child of PID 1),
so an architecture can hand over the cgroups its containers run under: their
CPU counters are added to the tree's, their memory to each sample's RSS, and
their memory high-water mark bounds the peak from below.

The hot path re-reads ``/proc/PID/stat`` of tracked processes through
descriptors kept open, and looks only at new PIDs to find children; ``psutil``
would rescan every process on the machine on each sample.
Status and I/O files are read only at start, at stop and every ``hwm_every``
samples, which keeps the cost at the default 0.1 s under 1% of a core.
"""
from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from .cgroups import Cgroup

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


class Stat(NamedTuple):
    ppid: int
    start: int  # starttime in ticks since boot: with the pid, a process's identity
    cpu_s: float  # utime + stime + cutime + cstime
    rss_bytes: int


def read_stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return parse_stat(f.read())
    except OSError:
        return None


def parse_stat(data: bytes) -> Stat:
    fields = data[data.rindex(b")") + 2 :].split(maxsplit=22)
    # fields[0] is field 3 (state) of proc(5)
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    return Stat(int(fields[1]), int(fields[19]), ticks * _TICK_S, int(fields[21]) * _PAGE)


def read_hwm_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def reset_hwm(pid: int) -> None:
    """Restart a process's high-water mark, so a run sees only its own peak."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def read_io(pid: int) -> tuple[int, int]:
    """Bytes read and written through system calls (``rchar``, ``wchar``),
    reaped children included."""
    read = write = 0
    try:
        with open(f"/proc/{pid}/io", "rb") as f:
            for line in f:
                if line.startswith(b"rchar:"):
                    read = int(line.split()[1])
                elif line.startswith(b"wchar:"):
                    write = int(line.split()[1])
    except OSError:
        pass
    return read, write


def _self_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Sample:
    t_s: float  # seconds since the monitor started
    cpu_percent: float  # of one core, over the interval before this sample
    rss_bytes: int  # summed over the tree
    processes: int


@dataclass
class Usage:
    cpu_s: float
    peak_rss_bytes: int
    io_read_bytes: int
    io_write_bytes: int
    processes: int  # descendants started during the run
    monitor_cpu_s: float  # what the sampling thread itself cost
    samples: list[Sample] = field(default_factory=list)
    container_cpu_s: float | None = None  # the part of cpu_s from the watched cgroups
    pids: set[int] = field(default_factory=set)


class Monitor:
    def __init__(self, interval_s: float = 0.1, root: int | None = None, hwm_every: int = 10):
        self.interval_s = interval_s
        self.root = root or os.getpid()
        self.hwm_every = hwm_every
        self.roots = {self.root}
        self._tracked: dict[int, Stat] = {}  # pid -> last stat, live descendants and roots
        self._fds: dict[int, int] = {}  # pid -> open /proc/PID/stat
        self._raw: dict[int, bytes] = {}  # pid -> its last stat line
        self._foreign: set[int] = set()
        self._baseline: dict[tuple[int, int], tuple[float, int, int]] = {}  # id -> cpu, rchar, wchar at start
        self._born: set[tuple[int, int]] = set()
        self._peak = 0
        self._samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._monitor_cpu_s = 0.0
        self._cgroups: list[Cgroup] = []
        self._cgroup_cpu0 = 0.0

    def watch_cgroup(self, cgroup: Cgroup) -> None:
        """Add the processes of a cgroup: one made for this run, not shared."""
        self._cgroups.append(cgroup)

    def watch(self, pid: int) -> None:
        """Add a process (and later its descendants) that is not our descendant."""
        with self._lock:
            self.roots.add(pid)
            self._foreign.discard(pid)

    def start(self) -> "Monitor":
        self._t0 = time.monotonic()
        self._self_cpu0 = _self_cpu_s()
        self._self_io0 = read_io(self.root)
        self._kids_maxrss0 = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        self._discover()
        for pid, stat in self._tracked.items():
            self._baseline[(pid, stat.start)] = (stat.cpu_s, *read_io(pid))
            reset_hwm(pid)
        self._born.clear()
        self._peak = 0
        self._cgroup_cpu0 = self._cgroup_cpu()
        self._last_cpu = self._tree_cpu() + self._cgroup_cpu0
        self._last_t = self._t0
        self._thread = threading.Thread(target=self._loop, name="mlpbench-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> Usage:
        self._stop.set()
        if self._thread:
            self._thread.join()
        with self._lock:
            try:
                self._sample(read_hwm=True)
                return self._usage()
            finally:
                for pid in list(self._tracked):
                    self._untrack(pid)

    def _usage(self) -> Usage:
        """Exact totals: the test process's rusage (reaped descendants included)
        plus what every descendant still alive used since the start."""
        cpu = _self_cpu_s() - self._self_cpu0
        read, write = (a - b for a, b in zip(read_io(self.root), self._self_io0))
        for pid, stat in self._tracked.items():
            if pid == self.root:
                continue
            cpu0, read0, write0 = self._baseline.get((pid, stat.start), (0.0, 0, 0))
            r, w = read_io(pid)
            cpu += stat.cpu_s - cpu0
            read += r - read0
            write += w - write0
        kids_maxrss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
        if kids_maxrss > self._kids_maxrss0:  # a child reaped during the run set a new high
            self._peak = max(self._peak, kids_maxrss)
        container_cpu = self._cgroup_cpu() - self._cgroup_cpu0 if self._cgroups else None
        cpu += container_cpu or 0.0
        self._peak = max([self._peak, *(c.peak_bytes() for c in self._cgroups)])
        return Usage(
            cpu_s=cpu,
            peak_rss_bytes=self._peak,
            io_read_bytes=max(0, read),
            io_write_bytes=max(0, write),
            processes=len(self._born),
            monitor_cpu_s=self._monitor_cpu_s,
            samples=list(self._samples),
            pids={pid for pid, _ in self._born},
            container_cpu_s=container_cpu,
        )

    def _loop(self) -> None:
        n = 0
        while not self._stop.wait(self.interval_s):
            t0 = time.thread_time()
            n += 1
            with self._lock:
                self._sample(read_hwm=n % self.hwm_every == 0)
            self._monitor_cpu_s += time.thread_time() - t0

    def _discover(self) -> None:
        """Track new descendants of the roots; forget processes that ended."""
        pids = {int(p) for p in os.listdir("/proc") if p.isdigit()}
        self._foreign &= pids
        for pid in list(self._tracked):
            if pid not in pids:
                self._untrack(pid)
        new = {p: s for p in pids - self._tracked.keys() - self._foreign if (s := read_stat(p))}
        changed = True
        while changed:  # a new child may be listed before its new parent
            changed = False
            for pid, stat in list(new.items()):
                if pid in self.roots or stat.ppid in self._tracked:
                    self._track(pid, stat)
                    self._peak = max(self._peak, read_hwm_bytes(pid))
                    del new[pid]
                    changed = True
        self._foreign.update(new)

    def _track(self, pid: int, stat: Stat) -> None:
        try:
            self._fds[pid] = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        except OSError:
            return
        self._tracked[pid] = stat
        self._born.add((pid, stat.start))

    def _untrack(self, pid: int) -> None:
        del self._tracked[pid]
        self._raw.pop(pid, None)
        os.close(self._fds.pop(pid))

    def _tree_cpu(self) -> float:
        return sum(s.cpu_s for s in self._tracked.values())

    def _cgroup_cpu(self) -> float:
        return sum(c.cpu_s() for c in self._cgroups)

    def _sample(self, read_hwm: bool) -> None:
        self._discover()
        for pid in list(self._tracked):
            try:
                raw = os.pread(self._fds[pid], 4096, 0)
            except OSError:  # ended since the listing
                self._untrack(pid)
                continue
            if raw != self._raw.get(pid):  # an idle process reads the same: skip the parse
                self._raw[pid] = raw
                self._tracked[pid] = parse_stat(raw)
            if read_hwm:
                self._peak = max(self._peak, read_hwm_bytes(pid))
        now = time.monotonic()
        rss = sum(s.rss_bytes for s in self._tracked.values()) + sum(c.memory_bytes() for c in self._cgroups)
        self._peak = max(self._peak, rss)
        cpu = self._tree_cpu() + self._cgroup_cpu()
        dt = now - self._last_t
        percent = max(0.0, (cpu - self._last_cpu) / dt * 100) if dt > 0 else 0.0
        self._last_cpu, self._last_t = cpu, now
        self._samples.append(Sample(round(now - self._t0, 4), round(percent, 1), rss, len(self._tracked)))
