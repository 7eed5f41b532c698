"""The ``mlpbench`` fixture: runs a workload on the test's architecture under
pytest-benchmark and puts the run records into ``extra_info``."""
from __future__ import annotations

import time
from contextlib import nullcontext

import pytest

from .architectures import RunFailed, Unavailable
from .record import FIGURES, RunRecord
from .report import medians
from .session import BenchSession


class MlpBench:
    def __init__(self, session: BenchSession, arch_name: str, benchmark, config: pytest.Config | None = None):
        self.session = session
        self.arch_name = arch_name
        self.benchmark = benchmark
        self.config = config
        self.records: list[RunRecord] = []

    def run(self, workload: str, **params) -> list[RunRecord]:
        """Run ``workload`` for the warm-up and measured rounds; return the measured records."""
        session, settings = self.session, self.session.settings
        arch = session.architecture(self.arch_name)
        work = session.registry.workload(workload)
        try:
            arch.check_workload(work)
        except Unavailable as exc:
            pytest.skip(str(exc))
        warmup = settings.warmup
        session.warm_up(arch, work, params)
        all_runs: list[RunRecord] = []
        started = time.monotonic()

        def run_once():
            n = len(all_runs)
            record = session.run_once(arch, work, round=n - warmup, warmup=n < warmup, params=params)
            all_runs.append(record)
            which = f"warm-up {n + 1}/{warmup}" if n < warmup else f"round {n - warmup + 1}/{settings.rounds}"
            self._progress(f"mlpbench: {self.arch_name} / {workload} {which} {record.outcome} in {record.wall_s:.2f} s "
                           f"(elapsed {time.monotonic() - started:.1f} s)")
            self._publish(all_runs)
            if record.outcome != "passed":
                # an Exception, not pytest.fail: pytest-benchmark then marks the benchmark as errored
                raise RunFailed(f"{self.arch_name} / {workload} round {record.round}: {record.outcome}: {record.error}")

        self.benchmark.group = work.name
        try:
            self.benchmark.pedantic(run_once, rounds=settings.rounds, warmup_rounds=warmup, iterations=1)
        except RunFailed as exc:
            pytest.fail(str(exc), pytrace=False)
        except BaseException:
            # pytest-benchmark flags only an Exception; an interrupted benchmark
            # with no timed round would otherwise break its JSON at session end
            self.benchmark.has_error = True
            raise
        self.records = [r for r in all_runs if not r.warmup]
        return self.records

    def _progress(self, line: str) -> None:
        """One line per round on the terminal, between the test's own output; off under -q."""
        if self.config is None or self.config.get_verbosity() < 0:
            return
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        capture = self.config.pluginmanager.get_plugin("capturemanager")
        if reporter is not None:
            with capture.global_and_fixture_disabled() if capture else nullcontext():
                reporter.write_line(line)

    def _publish(self, runs: list[RunRecord]) -> None:
        measured = [r for r in runs if not r.warmup]
        self.benchmark.extra_info["mlpbench"] = {
            "architecture": self.arch_name,
            "workload": runs[0].workload,
            "scale": runs[0].scale,
            "figures": list(FIGURES),
            "median": medians(runs),
            "rounds": [{"run_id": r.run_id, "outcome": r.outcome, **r.figures(), "gaps": r.gaps, "steps": r.steps}
                       for r in measured],
        }
