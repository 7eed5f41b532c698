"""The monitor on real process trees."""
import os
import subprocess
import sys
import time

from pytest_mlpbench.monitor import Monitor

GRANDCHILD = "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import time; time.sleep(0.6)'])"


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
        monitor = Monitor(0.1).start()
        time.sleep(1.0)
        usage = monitor.stop()
    finally:
        server.kill()
        server.wait()
    assert 0.3 < usage.cpu_s < 0.7  # about half of one core for one second
    assert usage.processes == 0  # started before the run


def test_samples_cover_the_run_at_the_interval():
    monitor = Monitor(0.05).start()
    time.sleep(0.5)
    usage = monitor.stop()
    assert 8 <= len(usage.samples) <= 12
    assert all(b.t_s > a.t_s for a, b in zip(usage.samples, usage.samples[1:]))
    assert usage.monitor_cpu_s < 0.5
