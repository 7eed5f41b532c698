"""Benchmarks on pytest-xdist workers: whole architectures per worker, each
worker on cores of its own, and the workers' records merged by the controller.

The controller (the process that runs ``pytest -n N``) checks that the cores
go round, hands each worker its cores and sends every benchmark of one
architecture to the same worker (``--dist loadgroup``, one group per
architecture). A worker pins itself, and so every process it starts, to its
cores, runs its benchmarks and writes nothing under ``--mlpbench-results``:
its records go back to the controller, which alone writes the results.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from pytest_mlpbench.options import Option, positive_int

CORES_PER_WORKER = Option(
    "cores_per_worker", "Under pytest-xdist (-n N), the cores each worker runs its architecture on, pinned "
    "(default: the cores this process may use, shared out evenly).", positive_int, None, "N")
OPTIONS = (CORES_PER_WORKER,)
INPUT_KEY = "mlpbench_cores"
OUTPUT_KEY = "mlpbench_records"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


def is_controller(config: pytest.Config) -> bool:
    return not is_worker(config) and config.getoption("dist", "no") != "no"


def plan_cores(available: list[int], workers: int, per_worker: int | None) -> list[list[int]]:
    """Disjoint sets of cores, one per worker; a usage error where they do not go round."""
    if not workers:
        return []
    per_worker = per_worker or len(available) // workers
    if per_worker < 1 or workers * per_worker > len(available):
        raise pytest.UsageError(
            f"--mlpbench-cores-per-worker: {workers} workers with {per_worker or 1} core(s) each need "
            f"{workers * (per_worker or 1)} cores, and this process may use {len(available)} "
            f"({', '.join(map(str, available))}); use fewer workers (-n) or fewer cores per worker")
    return [available[i * per_worker:(i + 1) * per_worker] for i in range(workers)]


class Controller:
    """The controller's side: cores for each worker, and the records they send back."""

    def __init__(self, config: pytest.Config, session):
        self.session = session
        if config.getoption("dist") == "load":  # -n N alone: keep each architecture on one worker
            config.option.dist = "loadgroup"
        local = [spec for spec in config.getoption("tx") or [] if spec.startswith("popen")]
        self.cores = plan_cores(sorted(os.sched_getaffinity(0)), len(local), session.settings.cores_per_worker)
        session.worker_cores = list(self.cores)

    @pytest.hookimpl(tryfirst=True)
    def pytest_xdist_make_scheduler(self, config, log):
        """Whole architectures per worker. Not through ``xdist_group`` marks: on
        pytest 9.2 loadgroup's renamed node ids no longer take effect
        (pytest-dev/pytest-xdist#1386), and nothing would say so."""
        if config.getoption("dist") != "loadgroup":
            return None
        from xdist.scheduler import LoadScopeScheduling

        architectures = sorted(self.session.selected(), key=len, reverse=True)

        class ArchitectureScheduling(LoadScopeScheduling):
            def _split_scope(self, nodeid: str) -> str:
                return architecture_of(nodeid, architectures) or super()._split_scope(nodeid)

        return ArchitectureScheduling(config, log)

    @pytest.hookimpl
    def pytest_configure_node(self, node):
        if node.gateway.spec.popen and not node.gateway.spec.via:  # a remote host's cores are its own
            node.workerinput[INPUT_KEY] = self.cores.pop(0)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        """pytest-benchmark turned itself off under xdist; on the controller, which
        times nothing, it saves the rounds the workers timed, and the gates judge them."""
        bench = session.config._benchmarksession
        bench.disabled, bench.xdist_warning = False, False
        gates = session.config.pluginmanager.get_plugin("mlpbench-gates")
        if gates is not None:
            gates.load_history()

    @pytest.hookimpl
    def pytest_testnodedown(self, node, error):
        output = getattr(node, "workeroutput", {}).get(OUTPUT_KEY, {})
        for line in output.get("lines", []):
            self.session.add_worker_line(line)
        bench = node.config._benchmarksession
        for data in output.get("benchmarks", []):
            bench.benchmarks.append(timed_elsewhere(data, bench.options))


def architecture_of(nodeid: str, architectures: list[str]) -> str | None:
    """The architecture among a benchmark's parameter ids (``test_x[1-airflow-local]``)."""
    ids = nodeid.rpartition("[")[2].rstrip("]") if nodeid.endswith("]") else ""
    for arch in architectures:  # longest first: "kubeflow-local" before "kubeflow"
        if ids == arch or ids.startswith(f"{arch}-") or ids.endswith(f"-{arch}") or f"-{arch}-" in ids:
            return arch
    return None


def pin_worker(config: pytest.Config) -> list[int]:
    """Pin this worker to its cores; the processes it starts inherit them."""
    cores = config.workerinput.get(INPUT_KEY)
    if not cores:
        return sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, cores)
    for name in THREAD_VARIABLES:
        os.environ[name] = str(len(cores))
    return list(cores)


def send_results(config: pytest.Config, session) -> None:
    """What the controller merges: each run's line, as the worker wrote it, and each benchmark's rounds."""
    ours = {record.run_id for record in session.records}  # the file keeps earlier sessions' runs too
    lines = [line for line in map(json.loads, _lines(session.results.dir / "runs.jsonl")) if line["run_id"] in ours]
    config.workeroutput[OUTPUT_KEY] = {"lines": lines, "benchmarks": session.benchmarks}


def _lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def benchmark_data(benchmark, records) -> dict:
    """One benchmark as the controller's pytest-benchmark needs it: its names, and the rounds' times."""
    fullname = benchmark.fullname
    arch = records[0].architecture if records else None
    if arch and fullname.endswith(f"@{arch}"):  # loadgroup's suffix: the name stays the serial one
        fullname = fullname[: -len(arch) - 1]
    return {"name": benchmark.name, "fullname": fullname, "group": benchmark.group, "param": benchmark.param,
            "params": benchmark.params, "extra_info": benchmark.extra_info,
            "durations": [r.wall_s for r in records]}


def timed_elsewhere(data: dict, options: dict):
    """A pytest-benchmark result of rounds a worker timed."""
    from pytest_benchmark.stats import Metadata

    fixture = SimpleNamespace(**{k: v for k, v in data.items() if k != "durations"}, cprofile_stats=None,
                              has_error=False)
    result = Metadata(fixture, iterations=1, options=options)
    for duration in data["durations"]:
        result.stats.update(duration)
    return result
