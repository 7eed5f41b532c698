"""The monitor on real process trees."""
import os
import subprocess
import sys
import time

import psutil
import pytest

from pytest_mlpbench.monitor import Monitor

GRANDCHILD = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(0.6)'])"


def cpu_s(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


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
