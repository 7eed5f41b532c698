"""The monitor: what a run's processes use, from the kernel's exact counters
and from samples taken in a daemon thread. docs/measurement.md says what each
figure counts.

The tree is the test process and every descendant, servers an architecture
started for the session included, plus any extra root an architecture hands
over (a container engine's service is not our child) and its descendants.
Containers run outside that tree (their engine's shim is a child of PID 1),
so an architecture can also hand over the cgroups its containers run under.

CPU: the test process's rusage (its reaped children included) less the
monitor's own work, plus what each live descendant used since the start, plus
the watched cgroups' counters. A process alive at the start that ends and is
reaped into the tree shows its whole lifetime in its parent's counters, so
what it had used at the start comes off.

Memory: where a memory cgroup can be made for the run (:mod:`.memcg`), the
tree's PSS at the start plus the cgroup's peak, which the kernel keeps
exactly; elsewhere the tree's PSS, sampled. The watched cgroups' peaks add.

The hot path re-reads ``/proc/PID/stat`` of tracked processes through
descriptors kept open, and looks only at new PIDs to find children; ``psutil``
would rescan every process on the machine on each sample.
"""
from __future__ import annotations

import os
import resource
import threading
import time
from dataclasses import dataclass, field
from typing import NamedTuple

from pytest_mlpbench.measure.cgroups import Cgroup
from pytest_mlpbench.measure.memcg import RunMemcg

_TICK_S = 1.0 / os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")
# smaps_rollup walks a process's page tables (about 2 ms for 200 MiB): a busy
# process's PSS is re-read at most this often, and follows its RSS in between
PSS_REREAD_S = 1.0
_LOADAVG = os.open("/proc/loadavg", os.O_RDONLY)  # read on every sample, open for the process's lifetime


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


def read_pss_bytes(pid: int) -> int | None:
    """Proportional set size: the resident pages, each shared one divided
    among the processes that map it; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


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


def _rusage_cpu_s() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


@dataclass
class Sample:
    t_s: float  # seconds since the monitor started
    cpu_percent: float  # of one core, over the interval before this sample
    rss_bytes: int  # the tree's memory now, by the run's memory method, plus the watched cgroups'
    processes: int


@dataclass
class Usage:
    cpu_s: float  # user + system CPU of the tree and the watched cgroups during the run; not the monitor's
    peak_rss_bytes: int  # peak of the memory held at the same time, shared pages once (see memory_method)
    io_read_bytes: int
    io_write_bytes: int
    processes: int  # descendants started during the run
    monitor_cpu_s: float  # what the monitor itself cost: start(), its thread and stop()
    memory_method: str  # "memcg-v1", "memcg-v2" or "pss-sampled", with "+containers" when cgroups were watched
    samples: list[Sample] = field(default_factory=list)
    container_cpu_s: float | None = None  # the part of cpu_s from the watched cgroups
    page_cache_bytes: int | None = None  # page cache in the memory cgroups counted, at stop(); None: none counted
    pids: set[int] = field(default_factory=set)


class _CgroupMemory:
    """The tree's PSS at the start plus what the run's memory cgroup was newly charged."""

    def __init__(self, memcg: RunMemcg, baseline_bytes: int):
        self.memcg, self.baseline_bytes = memcg, baseline_bytes
        self.method = f"memcg-{memcg.version}"

    def sample(self, tracked: dict[int, Stat], changed: set[int], reshared: set[int]) -> int:
        return self.baseline_bytes + self.memcg.memory_bytes()

    def peak_bytes(self) -> int:
        return self.baseline_bytes + self.memcg.peak_bytes()

    def page_cache_bytes(self) -> int | None:
        return self.memcg.page_cache_bytes()

    def close(self) -> None:
        self.memcg.close()


class _SampledPss:
    """The tree's summed PSS, sampled. PSS is read for a new process, for a
    parent whose child was born or ended (their sharing changed), and for a
    process whose stat changed, at most every ``PSS_REREAD_S``."""

    method = "pss-sampled"

    def __init__(self):
        self._read: dict[tuple[int, int], tuple[int, int, float]] = {}  # (pid, start) -> PSS, RSS, time of the read
        self._peak = 0

    def sample(self, tracked: dict[int, Stat], changed: set[int], reshared: set[int]) -> int:
        now = time.monotonic()
        read, total = {}, 0
        for pid, stat in tracked.items():
            last = self._read.get((pid, stat.start))
            if last is None or pid in reshared or (pid in changed and now - last[2] >= PSS_REREAD_S):
                pss = read_pss_bytes(pid)
                last = (stat.rss_bytes if pss is None else pss, stat.rss_bytes, now)
            read[(pid, stat.start)] = last
            total += max(0, last[0] + stat.rss_bytes - last[1])
        self._read = read
        self._peak = max(self._peak, total)
        return total

    def peak_bytes(self) -> int:
        return self._peak

    def page_cache_bytes(self) -> int | None:
        return None

    def close(self) -> None:
        pass


class Monitor:
    def __init__(self, interval_s: float = 0.1, memcg: bool = True):
        """``memcg=False`` measures memory by sampled PSS even where a memory cgroup could be made."""
        self.interval_s = interval_s
        self.use_memcg = memcg
        self.root = os.getpid()
        self.roots = {self.root}
        self._tracked: dict[int, Stat] = {}  # pid -> last stat, live descendants and roots
        self._fds: dict[int, int] = {}  # pid -> open /proc/PID/stat
        self._raw: dict[int, bytes] = {}  # pid -> its last stat line
        self._foreign: set[int] = set()
        self._last_pid = b""
        self._new_roots = False  # watch() added a process since the last listing
        self._baseline: dict[tuple[int, int], tuple[float, int, int]] = {}  # id -> cpu, rchar, wchar at start
        self._ended_cpu_s = 0.0  # corrections for processes that ended during the run
        self._ended_io = (0, 0)
        self._born: set[tuple[int, int]] = set()
        self._reshared: set[int] = set()  # parents of processes born or ended since the last sample
        self._samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_cpu_s = 0.0
        self._lock = threading.Lock()
        self._cgroups: list[Cgroup] = []
        self._memory: _CgroupMemory | _SampledPss | None = None

    def watch_cgroup(self, cgroup: Cgroup) -> None:
        """Add the processes of a cgroup: one made for this run, not shared."""
        self._cgroups.append(cgroup)

    def watch(self, pid: int) -> None:
        """Add a process (and later its descendants) that is not our descendant."""
        with self._lock:
            self.roots.add(pid)
            self._foreign.discard(pid)
            self._new_roots = True

    def start(self) -> "Monitor":
        began = time.thread_time()
        self._t0 = self._last_t = time.monotonic()
        try:
            self._discover()
            self._memory = self._open_memory()
            for pid, stat in self._tracked.items():
                self._baseline[(pid, stat.start)] = (stat.cpu_s, *read_io(pid))
            self._born.clear()
            self._ended_cpu_s, self._ended_io = 0.0, (0, 0)
            self._cgroup_cpu0 = self._cgroup_cpu()
            self._last_cpu = self._tree_cpu() + self._cgroup_cpu0
            self._io0 = read_io(self.root)
            self._cpu0 = _rusage_cpu_s()  # the measured window opens
            window = time.thread_time()
            self._thread = threading.Thread(target=self._loop, name="mlpbench-monitor", daemon=True)
            self._thread.start()
        except BaseException:
            self._close()
            raise
        now = time.thread_time()
        self._start_cpu_s, self._start_in_window_cpu_s = now - began, now - window
        return self

    def stop(self) -> Usage:
        began = time.thread_time()
        self._stop.set()
        if self._thread:
            self._thread.join()
        own_cpu = _rusage_cpu_s() - self._cpu0  # the measured window closes
        own_cpu -= self._thread_cpu_s + self._start_in_window_cpu_s + time.thread_time() - began
        io = read_io(self.root)
        with self._lock:
            try:
                self._sample()
                usage = self._usage(own_cpu, io)
            finally:
                self._close()
        usage.monitor_cpu_s = self._start_cpu_s + self._thread_cpu_s + time.thread_time() - began
        return usage

    def _open_memory(self) -> _CgroupMemory | _SampledPss:
        memcg = RunMemcg.create(self.root) if self.use_memcg else None
        if memcg is not None:
            try:
                memcg.adopt(self._tracked)
                self._discover()  # processes forked while the tree moved
                memcg.adopt(self._tracked)
                # after the move: a page touched meanwhile counts twice rather than not at all
                baseline = sum(read_pss_bytes(pid) or stat.rss_bytes for pid, stat in self._tracked.items())
                return _CgroupMemory(memcg, baseline)
            except BaseException as exc:
                memcg.close()
                if not isinstance(exc, OSError):  # a process that cannot be moved would go uncounted: sample
                    raise
        sampled = _SampledPss()
        sampled.sample(self._tracked, set(), set())  # the start is a sample too
        return sampled

    def _close(self) -> None:
        for pid in list(self._tracked):
            self._untrack(pid)
        if self._memory:
            self._memory.close()

    def _usage(self, own_cpu_s: float, io: tuple[int, int]) -> Usage:
        """Exact totals: the test process's rusage and I/O (reaped descendants
        included) plus what every descendant still alive used since the start."""
        cpu = own_cpu_s + self._ended_cpu_s
        read, write = (now - start + ended for now, start, ended in zip(io, self._io0, self._ended_io))
        for pid, stat in self._tracked.items():
            if pid == self.root:
                continue
            cpu0, read0, write0 = self._baseline.get((pid, stat.start), (0.0, 0, 0))
            r, w = read_io(pid)
            cpu += stat.cpu_s - cpu0
            read += r - read0
            write += w - write0
        container_cpu = self._cgroup_cpu() - self._cgroup_cpu0 if self._cgroups else None
        cache = self._memory.page_cache_bytes()
        if self._cgroups:
            cache = (cache or 0) + sum(c.page_cache_bytes() for c in self._cgroups)
        return Usage(
            cpu_s=max(0.0, cpu + (container_cpu or 0.0)),
            peak_rss_bytes=self._memory.peak_bytes() + sum(c.peak_bytes() for c in self._cgroups),
            io_read_bytes=max(0, read),
            io_write_bytes=max(0, write),
            processes=len(self._born),
            monitor_cpu_s=0.0,  # known once stop() is done
            memory_method=self._memory.method + ("+containers" if self._cgroups else ""),
            samples=list(self._samples),
            pids={pid for pid, _ in self._born},
            container_cpu_s=container_cpu,
            page_cache_bytes=cache,
        )

    def _loop(self) -> None:
        try:
            while not self._stop.wait(self.interval_s):
                with self._lock:
                    self._sample()
        finally:
            self._thread_cpu_s = time.thread_time()

    def _discover(self) -> None:
        """Track new descendants of the roots; forget processes that ended.
        Listing /proc is most of a sample's cost: skipped while no process
        was created anywhere (the last PID in /proc/loadavg is the same)."""
        last_pid = os.pread(_LOADAVG, 128, 0).rsplit(maxsplit=1)[-1]
        if last_pid == self._last_pid and not self._new_roots:
            return
        self._last_pid, self._new_roots = last_pid, False
        pids = {int(p) for p in os.listdir("/proc") if p.isdigit()}
        self._foreign &= pids
        self._ended([pid for pid in self._tracked if pid not in pids])
        new = {p: s for p in pids - self._tracked.keys() - self._foreign if (s := read_stat(p))}
        changed = True
        while changed:  # a new child may be listed before its new parent
            changed = False
            for pid, stat in list(new.items()):
                if pid in self.roots or stat.ppid in self._tracked:
                    self._track(pid, stat)
                    del new[pid]
                    changed = True
        self._foreign.update(new)

    def _ended(self, pids: list[int]) -> None:
        """Forget processes that ended. One whose parent is tracked was reaped
        into the tree, whose counters now hold its whole lifetime: what it had
        used before the run comes off. One reaped outside (a watched root, an
        orphan) adds what it was last seen to have used in the run."""
        cpu, read, write = self._ended_cpu_s, *self._ended_io
        for pid in pids:
            stat = self._tracked[pid]
            cpu0, read0, write0 = self._baseline.get((pid, stat.start), (0.0, 0, 0))
            if stat.ppid in self._tracked:
                cpu, read, write = cpu - cpu0, read - read0, write - write0
            else:
                cpu += stat.cpu_s - cpu0
            self._reshared.add(stat.ppid)
        self._ended_cpu_s, self._ended_io = cpu, (read, write)
        for pid in pids:
            self._untrack(pid)

    def _track(self, pid: int, stat: Stat) -> None:
        try:
            self._fds[pid] = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        except OSError:
            return
        self._tracked[pid] = stat
        self._born.add((pid, stat.start))
        self._reshared.add(stat.ppid)

    def _untrack(self, pid: int) -> None:
        del self._tracked[pid]
        self._raw.pop(pid, None)
        os.close(self._fds.pop(pid))

    def _tree_cpu(self) -> float:
        return sum(s.cpu_s for s in self._tracked.values())

    def _cgroup_cpu(self) -> float:
        return sum(c.cpu_s() for c in self._cgroups)

    def _sample(self) -> None:
        self._discover()
        changed, ended = set(), []
        for pid in self._tracked:
            try:
                raw = os.pread(self._fds[pid], 4096, 0)
            except OSError:  # ended (and reaped) since the last listing
                ended.append(pid)
                continue
            if raw != self._raw.get(pid):  # an idle process reads the same: skip the parse
                self._raw[pid] = raw
                self._tracked[pid] = parse_stat(raw)
                changed.add(pid)
        self._ended(ended)
        reshared, self._reshared = self._reshared, set()
        memory = self._memory.sample(self._tracked, changed, reshared) + sum(c.memory_bytes() for c in self._cgroups)
        now = time.monotonic()
        cpu = self._tree_cpu() + self._cgroup_cpu()
        dt = now - self._last_t
        percent = max(0.0, (cpu - self._last_cpu) / dt * 100) if dt > 0 else 0.0
        self._last_cpu, self._last_t = cpu, now
        self._samples.append(Sample(round(now - self._t0, 4), round(percent, 1), memory, len(self._tracked)))
