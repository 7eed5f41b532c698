"""The monitor on real process trees, checked against known truth."""
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from pytest_mlpbench.measure.cgroups import Cgroup, cgroup_mounts
from pytest_mlpbench.measure.memcg import memcg_of, memory_hierarchy
from pytest_mlpbench.measure.monitor import Monitor

MiB = 2**20
GRANDCHILD = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(0.6)'])"


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def tree_pss() -> int:
    """The PSS of this process and its descendants, from psutil: the truth the monitor's memory is checked against."""
    me = psutil.Process()
    return sum(p.memory_full_info().pss for p in [me, *me.children(recursive=True)])


def python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def skip_without_memcg(usage) -> None:
    if usage.memory_method == "pss-sampled":
        pytest.skip("no memory cgroup can be made here (not root, or cgroup v2 without delegation)")


def test_sees_grandchildren_and_counts_started_processes():
    fds = open_fds()
    monitor = Monitor(0.05).start()
    subprocess.run([sys.executable, "-c", GRANDCHILD], check=True)
    usage = monitor.stop()
    assert usage.processes == 2
    assert max(s.processes for s in usage.samples) == 3  # this process, the child, the grandchild
    assert open_fds() == fds  # every /proc descriptor closed again


def test_server_alive_across_the_run_is_charged_only_for_the_run():
    server = subprocess.Popen(
        [sys.executable, "-c", "import time\nwhile True:\n    s = time.process_time()\n    while time.process_time() - s < 0.05: pass\n    time.sleep(0.05)"]
    )
    try:
        time.sleep(1.0)  # the server burns CPU before the run: not the run's
        before = cpu_s(server.pid)
        monitor = Monitor(0.1).start()
        time.sleep(1.0)
        usage = monitor.stop()
        truth = cpu_s(server.pid) - before
    finally:
        server.kill()
        server.wait()
    assert truth > 0.05
    assert usage.cpu_s == pytest.approx(truth, abs=0.05)  # plus this process's own few milliseconds
    assert usage.processes == 0  # started before the run


def test_samples_cover_the_run_at_the_interval():
    monitor = Monitor(0.05).start()
    time.sleep(0.5)
    usage = monitor.stop()
    assert 8 <= len(usage.samples) <= 12
    assert all(b.t_s > a.t_s for a, b in zip(usage.samples, usage.samples[1:]))
    assert usage.monitor_cpu_s < 0.5


ORPHAN = (
    "import subprocess, sys\n"
    "code = 'import time\\ns = time.process_time()\\nwhile time.process_time() - s < 3: pass'\n"
    "print(subprocess.Popen([sys.executable, '-c', code], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).pid)\n"
)


def test_watched_process_outside_the_tree_is_measured():
    pid = int(subprocess.run([sys.executable, "-c", ORPHAN], capture_output=True, text=True, check=True).stdout)
    try:
        before = cpu_s(pid)
        unwatched = Monitor(0.05).start()
        time.sleep(0.5)
        assert unwatched.stop().cpu_s < 0.05 < cpu_s(pid) - before  # a busy process, but not ours
        before = cpu_s(pid)
        monitor = Monitor(0.05)
        monitor.watch(pid)
        monitor.start()
        time.sleep(1.0)
        usage = monitor.stop()
        truth = cpu_s(pid) - before
    finally:
        os.kill(pid, 9)
    assert usage.cpu_s == pytest.approx(truth, abs=0.05)


FORKER = """
import os, sys, time
block = b'x' * (300 * 2**20)
print('holding', flush=True)
sys.stdin.readline()
child = os.fork()
if child == 0:  # shares the block, touches none of it
    time.sleep(0.5)
    os._exit(0)
os.waitpid(child, 0)
print('done', flush=True)
"""


@pytest.mark.parametrize("memcg", [True, False], ids=["memcg", "pss"])
def test_a_forked_child_counts_the_pages_it_shares_once(memcg):
    parent = python(FORKER)  # holds 300 MiB from before the run; its child is the run's
    try:
        assert parent.stdout.readline() == "holding\n"
        before = tree_pss()
        monitor = Monitor(memcg=memcg).start()
        parent.stdin.write("fork\n")
        parent.stdin.flush()
        assert parent.stdout.readline() == "done\n"
        usage = monitor.stop()
    finally:
        parent.kill()
        parent.wait()
    assert before > 300 * MiB
    assert usage.processes == 1
    assert before - 5 * MiB < usage.peak_rss_bytes < before + 100 * MiB  # summed RSS would add 300 MiB


HOLDER = """
import sys, time
block = b'x' * (200 * 2**20)
print('holding', flush=True)
sys.stdin.readline()
time.sleep(0.06)
"""


@pytest.mark.parametrize("interval_s", [0.1, 10.0], ids=["default-interval", "no-sample-in-the-run"])
def test_short_concurrent_peaks_between_samples_are_counted(interval_s):
    before = tree_pss()
    monitor = Monitor(interval_s).start()
    children = [python(HOLDER) for _ in range(2)]
    for child in children:
        assert child.stdout.readline() == "holding\n"
    for child in children:  # both hold 200 MiB now; each lets go 60 ms after this
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        assert child.wait() == 0
    usage = monitor.stop()
    skip_without_memcg(usage)
    assert usage.peak_rss_bytes - before >= 360 * MiB


BUSY = "import time\ns = time.process_time()\nwhile time.process_time() - s < 1.0: pass"


def test_a_child_alive_at_the_start_and_reaped_during_the_run_counts_only_its_run_cpu():
    child = subprocess.Popen([sys.executable, "-c", BUSY])
    while cpu_s(child.pid) < 0.3:  # busy before the run
        time.sleep(0.01)
    before = cpu_s(child.pid)
    monitor = Monitor().start()
    after = cpu_s(child.pid)  # the monitor read the child's CPU in between
    reaped0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child.wait()
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    time.sleep(0.2)
    usage = monitor.stop()
    lifetime = reaped.ru_utime + reaped.ru_stime - reaped0.ru_utime - reaped0.ru_stime
    assert lifetime - after > 0.2  # and during it
    tick = 0.01  # of the kernel's per-process counters, plus this process's own few milliseconds
    assert lifetime - after - 2 * tick <= usage.cpu_s <= lifetime - before + 2 * tick


def test_the_monitors_own_cpu_is_not_in_cpu_s():
    monitor = Monitor(0.001).start()
    time.sleep(1.0)
    usage = monitor.stop()
    assert usage.monitor_cpu_s > 0.02  # hundreds of samples
    assert usage.cpu_s < 0.005


def test_sampled_pss_measures_a_long_held_allocation():
    before = tree_pss()
    monitor = Monitor(memcg=False).start()
    subprocess.run([sys.executable, "-c", "import time; block = b'x' * (300 * 2**20); time.sleep(0.5)"], check=True)
    usage = monitor.stop()
    assert usage.memory_method == "pss-sampled"
    assert usage.page_cache_bytes is None
    # Above: this test process is in the tree too, and in a long session its own memory moved by up
    # to 67 MiB between the two readings; counting the 300 MiB twice would still show.
    assert 0.9 * 300 * MiB <= usage.peak_rss_bytes - before < 450 * MiB


def test_page_cache_the_run_writes_is_reported_apart(tmp_path):
    before = tree_pss()
    monitor = Monitor().start()
    (tmp_path / "data").write_bytes(b"x" * (64 * MiB))
    usage = monitor.stop()
    skip_without_memcg(usage)
    assert usage.page_cache_bytes >= 60 * MiB
    assert usage.peak_rss_bytes - before >= 2 * 60 * MiB  # the 64 MiB written, and their page cache


def our_memcgs_of(pid: int) -> list[Path]:
    """Run cgroups made by process ``pid`` of this process's memory cgroup: under it (v1) or beside it (v2)."""
    found = memory_hierarchy(cgroup_mounts())
    if not found:
        return []
    own = Path(found[0], memcg_of(os.getpid(), found[1]).lstrip("/"))
    return [*own.glob(f"mlpbench-{pid}-*"), *own.parent.glob(f"mlpbench-{pid}-*")]


def test_every_process_goes_back_and_nothing_is_left_after_an_exception():
    before = Path("/proc/self/cgroup").read_text()
    server = None
    monitor = Monitor().start()
    with pytest.raises(RuntimeError):
        try:
            server = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
            raise RuntimeError("the run failed")
        finally:
            usage = monitor.stop()
    try:
        assert Path("/proc/self/cgroup").read_text() == before
        assert Path(f"/proc/{server.pid}/cgroup").read_text() == before  # started in the run, alive after it
        assert not our_memcgs_of(os.getpid())
        assert usage.processes == 1
    finally:
        server.kill()
        server.wait()


KILLED_IN_A_RUN = """
import os, sys, time
from pytest_mlpbench.measure.monitor import Monitor
Monitor().start()
print(os.getpid(), flush=True)
time.sleep(60)
"""


def test_a_run_cgroup_left_by_a_killed_session_is_removed_by_the_next_monitor():
    killed = python(KILLED_IN_A_RUN)
    pid = int(killed.stdout.readline())
    left = our_memcgs_of(pid)
    killed.kill()
    killed.wait()
    assert our_memcgs_of(pid) == left  # SIGKILL: no stop()
    usage = Monitor().start().stop()
    skip_without_memcg(usage)
    assert left and not our_memcgs_of(pid)


def test_memory_controller_and_page_cache_are_read_from_v1_and_v2_files(tmp_path):
    v1, v2, bare = tmp_path / "v1", tmp_path / "v2", tmp_path / "bare"
    for directory, stat in [(v1, "cache 1\nrss 2\ntotal_cache 8192\n"), (v2, "anon 2\nfile 4096\n")]:
        (directory / "run").mkdir(parents=True)
        (directory / "run" / "memory.stat").write_text(stat)
    (v2 / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    bare.mkdir()
    (bare / "cgroup.controllers").write_text("hugetlb\n")  # a v2 mount without the memory controller
    assert memory_hierarchy({"memory": str(v1), "unified": str(bare)}) == (str(v1), "v1")
    assert memory_hierarchy({"unified": str(v2)}) == (str(v2), "v2")
    assert memory_hierarchy({"cpu": str(v1), "unified": str(bare)}) is None
    assert Cgroup("/run", {"memory": str(v1)}).page_cache_bytes() == 8192
    assert Cgroup("/run", {"unified": str(v2)}).page_cache_bytes() == 4096
