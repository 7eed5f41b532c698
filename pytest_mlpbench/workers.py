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
import time
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


def worker_id(config: pytest.Config) -> str:
    return config.workerinput["workerid"] if is_worker(config) else ""


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
        from execnet import XSpec  # pytest-xdist's, here only under xdist
        from xdist.workermanage import parse_tx_spec_config

        local = [spec for spec in map(XSpec, parse_tx_spec_config(config)) if spec.popen and not spec.via]
        self.cores = plan_cores(sorted(os.sched_getaffinity(0)), len(local), session.settings.cores_per_worker)
        session.worker_cores = list(self.cores)
        self.started_ns = time.time_ns()

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

            def remove_node(self, node) -> str | None:
                """As loadscope's, but the benchmark that crashed a worker is not
                sent to its replacement, which it would crash again."""
                crashed = super().remove_node(node)
                for scope, unit in list(self.workqueue.items()):
                    if crashed in unit:
                        unit[crashed] = True
                        if all(unit.values()):
                            del self.workqueue[scope]
                return crashed

        return ArchitectureScheduling(config, log)

    @pytest.hookimpl
    def pytest_configure_node(self, node):
        if is_local(node):  # a remote host's cores are its own
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
        output = getattr(node, "workeroutput", {}).get(OUTPUT_KEY)
        if is_local(node):  # a worker that replaces a crashed one gets its cores
            self.cores.append(node.workerinput[INPUT_KEY])
        if output is None:
            self.recover(node, error)
            return
        self.session.workers[node.gateway.id] = {"tx": tx_spec(node.gateway.spec),
                                                 "executable": node.workerinfo.get("executable"),
                                                 "host": output["host"], "cores": output["cores"]}
        for run in output["runs"]:
            self.session.add_worker_run(run)
        bench = node.config._benchmarksession
        for data in output["benchmarks"]:
            bench.benchmarks.append(timed_elsewhere(data, bench.options))
        gates = node.config.pluginmanager.get_plugin("mlpbench-gates")
        if gates is not None and output["marked"]:  # the controller collects no tests: the workers read the marks
            gates.add_marked(output["marked"])
            gates.load_history()

    def recover(self, node, error) -> None:
        """A worker that died sent nothing: the runs it wrote to its own files
        this session are kept; its benchmarks' rounds are lost, and that is said."""
        lines = []
        if is_local(node):
            path = self.session.results.dir / "workers" / node.gateway.id / "runs.jsonl"
            lines = [line for line in map(json.loads, _lines(path)) if line["submit_ns"] >= self.started_ns]
        for line in lines:
            self.session.add_worker_line(line)
        self.session.problems.append(f"worker {node.gateway.id} stopped without sending its results ({error}); "
                                     f"{len(lines)} run(s) it wrote were kept, its benchmarks are not in the JSON")


def is_local(node) -> bool:
    return bool(node.gateway.spec.popen and not node.gateway.spec.via)


def tx_spec(spec) -> str:
    """A worker's ``--tx`` as given, without the execmodel xdist adds."""
    return "//".join(part for part in spec._spec.split("//") if not part.startswith("execmodel="))


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
    """What the controller merges: each run whole, each benchmark's rounds, and the benchmarks' own gates."""
    gates = config.pluginmanager.get_plugin("mlpbench-gates")
    marked = {nodeid: [g.text for g in found] for nodeid, found in gates.marked.items()} if gates else {}
    config.workeroutput[OUTPUT_KEY] = {"runs": session.outbox, "benchmarks": session.benchmarks, "marked": marked,
                                       "host": session.host, "cores": session.cores}


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
