"""The ``mlpbench`` fixture: runs a workload on the test's architecture under
pytest-benchmark and puts the run records into ``extra_info``.

pytest-benchmark times exactly the architecture's run: the monitor's start,
building the record and writing results happen in its ``setup`` and
``teardown``, so its statistics are the records' ``wall_s``. Where
pytest-benchmark is disabled (``--benchmark-disable``) mlpbench times and
records the rounds itself and says so; a benchmark never passes unmeasured.
"""
from __future__ import annotations

import time
from contextlib import nullcontext

import pytest

from pytest_mlpbench.architectures import RunFailed, Unavailable
from pytest_mlpbench.measure.record import FIGURES, OPTIONAL_FIGURES, RunRecord
from pytest_mlpbench.model.workload import Workload
from pytest_mlpbench.results.tables import medians
from pytest_mlpbench.session import BenchSession, LiveRun
from pytest_mlpbench.workers import benchmark_data

class MlpBench:
    def __init__(self, session: BenchSession, arch_name: str, benchmark, config: pytest.Config | None = None):
        self.session = session
        self.arch_name = arch_name
        self.benchmark = benchmark
        self.config = config
        self.records: list[RunRecord] = []

    def run(self, workload: str | Workload, **params) -> list[RunRecord]:
        """Run ``workload`` (a registered workload's name, or a workload) for the
        warm-up and measured rounds; return the measured records."""
        session = self.session
        arch = session.architecture(self.arch_name)
        if isinstance(workload, Workload):
            session.registry.workloads.setdefault(workload.name, workload)
            workload = workload.name
        work = session.registry.workload(workload)
        try:
            arch.check_workload(work)
            arch.handoff(work)
        except Unavailable as exc:
            pytest.skip(str(exc))
        self.benchmark.group = work.name
        rounds = _Rounds(self, arch, work, params)
        try:
            session.warm_up(arch, work, params)
            if self.benchmark.disabled:
                rounds.run_alone()
            else:
                rounds.run_under_benchmark()
        except RunFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        except BaseException:
            rounds.finish_pending()
            # pytest-benchmark flags only an Exception; an interrupted benchmark
            # with no timed round would otherwise break its JSON at session end
            self.benchmark.has_error = True
            raise
        self.records = [r for r in rounds.all if not r.warmup]
        if len(self.records) != session.settings.rounds:  # cannot pass without its measured rounds
            pytest.fail(f"{self.arch_name} / {workload}: {len(self.records)} rounds measured, "
                        f"{session.settings.rounds} expected", pytrace=False)
        if session.role == "worker":
            session.benchmarks.append(benchmark_data(self.benchmark, self.records))
        return self.records

    def progress(self, line: str) -> None:
        """One line on the terminal, between the test's own output; off under -q."""
        if self.config is None or self.config.get_verbosity() < 0:
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None:
            with capture.global_and_fixture_disabled() if capture else nullcontext():
                reporter.write_line(line)

    def publish(self, runs: list[RunRecord]) -> None:
        measured = [r for r in runs if not r.warmup]
        self.benchmark.extra_info["mlpbench"] = {
            "architecture": self.arch_name,
            "workload": runs[0].workload,
            "scale": runs[0].scale,
            "params": runs[0].params,
            "handoff": runs[0].handoff,
            "figures": [*FIGURES, *OPTIONAL_FIGURES],
            "median": medians(runs),
            "rounds": [{"run_id": r.run_id, "outcome": r.outcome, **r.figures(), "memory_method": r.memory_method,
                        "gaps": r.gaps, "steps": r.steps}
                       for r in measured],
        }


class _Rounds:
    """The warm-up and measured rounds of one benchmark, in order."""

    def __init__(self, bench: MlpBench, arch, workload, params: dict):
        self.bench, self.arch, self.workload, self.params = bench, arch, workload, params
        self.settings = bench.session.settings
        self.all: list[RunRecord] = []
        self.pending: LiveRun | None = None
        self.started = time.monotonic()

    def run_under_benchmark(self) -> None:
        self.bench.benchmark.pedantic(LiveRun.execute, setup=self.start, teardown=self.finish,
                                      rounds=self.settings.rounds, warmup_rounds=self.settings.warmup, iterations=1)

    def run_alone(self) -> None:
        """pytest-benchmark is disabled: time and record every round here, and say so."""
        self.bench.benchmark._mode = "timed by mlpbench"  # else it warns that the fixture went unused
        for _ in range(self.settings.warmup + self.settings.rounds):
            (live,), _ = self.start()
            live.execute()
            self.finish(live)
        if self.bench.session.role == "worker":
            return  # the controller puts them in pytest-benchmark's JSON and gates
        self.bench.progress(f"mlpbench: pytest-benchmark is disabled, so mlpbench timed the {self.settings.rounds} "
                            f"rounds itself: in {self.bench.session.results.dir}, not in pytest-benchmark's JSON or gates")

    def start(self):
        n = len(self.all)
        warmup = n < self.settings.warmup
        self.pending = self.bench.session.start_run(self.arch, self.workload, round=n - self.settings.warmup,
                                                    warmup=warmup, params=self.params)
        return (self.pending,), {}

    def finish(self, live: LiveRun) -> None:
        self.pending = None
        record = self.bench.session.finish_run(live)
        self.all.append(record)
        n, warmup = len(self.all), self.settings.warmup
        which = f"warm-up {n}/{warmup}" if record.warmup else f"round {n - warmup}/{self.settings.rounds}"
        self.bench.progress(f"mlpbench: {self.arch.name} / {self.workload.name} {which} {record.outcome} in "
                            f"{record.wall_s:.2f} s (elapsed {time.monotonic() - self.started:.1f} s)")
        self.bench.publish(self.all)
        if record.outcome != "passed":
            # an Exception, not pytest.fail: pytest-benchmark then marks the benchmark as errored
            raise RunFailed(f"{self.arch.name} / {self.workload.name} round {record.round}: "
                            f"{record.outcome}: {record.error}")

    def finish_pending(self) -> None:
        """A round cut short (Ctrl-C, SIGTERM) still leaves its record."""
        if self.pending is not None:
            live, self.pending = self.pending, None
            self.all.append(self.bench.session.finish_run(live))
            self.bench.publish(self.all)
