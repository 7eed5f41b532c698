"""The monitor's own cost at the default interval while it watches a tree of 20
processes. Goal: under 1% of one core. Run: pytest benchmarks -m monitor"""
import subprocess
import sys
import time

import pytest

from pytest_mlpbench.measure.monitor import Monitor

TREE = 20


@pytest.fixture
def tree():
    children = [subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) for _ in range(TREE)]
    yield children
    for child in children:
        child.kill()
        child.wait()


@pytest.mark.monitor
def test_monitor_cost(benchmark, tree):
    interval = 0.1
    monitor = Monitor(interval).start()
    time.sleep(5)
    usage = monitor.stop()
    assert max(s.processes for s in usage.samples) == TREE + 1  # the test process and its 20 children
    thread_cost = usage.monitor_cpu_s / (len(usage.samples) - 1)
    benchmark.extra_info["monitor"] = {
        "interval_s": interval,
        "processes": TREE + 1,
        "cpu_s_per_sample": thread_cost,
        "percent_of_one_core": 100 * thread_cost / interval,
    }
    running = Monitor(interval).start()  # one sample of a live monitor, timed by pytest-benchmark

    def one_sample():
        with running._lock:
            running._sample()

    try:
        benchmark.pedantic(one_sample, rounds=200, iterations=1)
    finally:
        running.stop()
    print(f"\nmonitor: {100 * thread_cost / interval:.2f}% of one core at {interval}s, {TREE + 1} processes")
