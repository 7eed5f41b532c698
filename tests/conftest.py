import json
import os
from pathlib import Path

import pytest

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

LINEAR_TEST = """
import pytest


@pytest.mark.training
def test_linear(mlpbench):
    mlpbench.run("linear")
"""


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
