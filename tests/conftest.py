import contextlib
import json
import os
import signal
from pathlib import Path

import psutil
import pytest
from postgres import PostgresServer, PostgresUnavailable

TESTS = Path(__file__).parent

REGISTER = """
from fakes import *


def pytest_mlpbench_register(registry):
    for workload in (LINEAR, FANOUT, FAILING, MEMORY, CPU, SLOW):
        registry.add_workload(workload)
    registry.add_architecture("sleepy", Sleepy)
    registry.add_architecture("missing", Missing)
    registry.add_architecture("no-fanout", NoFanout)
"""

MARKERS = {"linear": "training", "fanout": "inference", "failing": "training", "slow": "training"}


def bench_source(*workloads: str) -> str:
    """A test module with one benchmark per fake workload, under its marker."""
    tests = [f"@pytest.mark.{MARKERS[name]}\ndef test_{name}(mlpbench):\n    mlpbench.run({name!r})\n"
             for name in workloads]
    return "\n\n".join(["import pytest\n", *tests])


LINEAR_TEST = bench_source("linear")


def default_sigint() -> None:
    """``preexec_fn`` for a child session that a test interrupts: a background
    job of a shell (``&``, nohup) starts with SIGINT ignored, and Python then
    raises no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class BenchProject:
    """A pytest project in a temporary directory that runs benchmarks with mlpbench."""

    def __init__(self, pytester: pytest.Pytester):
        self.pytester = pytester
        self.path = pytester.path
        pytester.makeconftest(REGISTER)

    def tests(self, source: str = LINEAR_TEST, name: str = "test_bench") -> None:
        self.pytester.makepyfile(**{name: source})

    def run(self, *args: str) -> pytest.RunResult:
        return self.pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "--benchmark-json=bench.json", "--mlpbench-warmup=0", *args
        )

    def benchmarks(self) -> list[dict]:
        return json.loads((self.path / "bench.json").read_text())["benchmarks"]

    def runs(self) -> list[dict]:
        lines = (self.path / "results" / "runs.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines]


@pytest.fixture
def bench(pytester, monkeypatch) -> BenchProject:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    return BenchProject(pytester)


#: Loopback as psutil gives it, for IPv4, IPv6 and IPv4 on an IPv6 socket.
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def listening_ips(procs) -> set[str]:
    """The addresses ``procs`` (psutil processes) listen on."""
    pids = {p.pid for p in procs}
    return {c.laddr.ip for c in psutil.net_connections("inet") if c.status == psutil.CONN_LISTEN and c.pid in pids}


@contextlib.contextmanager
def postgres_if_installed(database: str):
    """A throwaway PostgreSQL server with ``database``, or None where none is installed."""
    try:
        server = PostgresServer(database=database)
    except PostgresUnavailable:
        yield None
        return
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL server, skipped with the reason where none is installed."""
    try:
        server = PostgresServer()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    server.start()
    yield server
    server.stop()


#: REGISTER and the fault workloads of test_fault_matrix.py. Not in REGISTER itself: the
#: registered-workloads suite runs every registered workload (test_plugin counts them).
FAULTS_REGISTER = REGISTER + """

_register_fakes = pytest_mlpbench_register


def pytest_mlpbench_register(registry):
    _register_fakes(registry)
    for workload in (RAISES, SELFKILL, AWAIT):
        registry.add_workload(workload)
"""
MARKERS.update({"raises": "training", "selfkill": "training", "await": "training"})
