"""pytest hooks of the regression gates: collect the gates (options, ini,
``mlpbench_fail`` markers), read the saved history before this session saves
its own run, and judge every benchmark at session end. The verdicts also go
to ``gates.json`` in the session's results directory, for ``report.html``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_mlpbench.gates.history import History
from pytest_mlpbench.gates.options import OPTIONS
from pytest_mlpbench.gates.spec import Gate, GateError, parse_gates
from pytest_mlpbench.gates.stats import require_scipy
from pytest_mlpbench.gates.storage import Store
from pytest_mlpbench.gates.table import table
from pytest_mlpbench.gates.verdict import SAVE_HINT, Verdict, evaluate, recorded_figures
from pytest_mlpbench.options import Settings
from pytest_mlpbench.results.atomic import write_atomic

MARKER = ("mlpbench_fail(*expressions): regression gates METRIC:STAT:THRESHOLD for this benchmark only, "
          "added to --mlpbench-fail, e.g. @pytest.mark.mlpbench_fail('overhead_s:median:+20%')")


class GatePlugin:
    def __init__(self, config: pytest.Config, settings: Settings | None = None):
        self.config = config
        self.settings = settings or Settings.from_config(config, OPTIONS)
        self.marked: dict[str, list[Gate]] = {}
        self.history: History | None = None
        self.verdicts: list[Verdict] = []
        self.problems: list[str] = []
        self.off: str | None = None  # why gates that were asked for are not evaluated
        config.addinivalue_line("markers", MARKER)

    def gates_for(self, nodeid: str) -> list[Gate]:
        gates = {g.text: g for g in self.settings.fail + self.marked.get(nodeid, [])}
        return list(gates.values())

    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        marks = {item.nodeid: [t for mark in item.iter_markers("mlpbench_fail") for t in mark.args] for item in items}
        self.add_marked(marks)

    def add_marked(self, marks: dict[str, list[str]]) -> None:
        """The gates of ``mlpbench_fail`` markers, by node id (under pytest-xdist, as the workers read them)."""
        for nodeid, texts in marks.items():
            if texts:
                try:
                    self.marked[nodeid] = parse_gates(texts, f"{nodeid}: mlpbench_fail marker")
                except GateError as exc:
                    raise pytest.UsageError(str(exc)) from None

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.load_history()

    def load_history(self) -> None:
        """Read the history now: at session end pytest-benchmark has already saved this run."""
        if self.history is not None or not (self.settings.fail or self.marked):
            return
        bench = getattr(self.config, "_benchmarksession", None)
        if bench is None or bench.disabled or bench.skip:
            self.off = "pytest-benchmark is " + ("skipping benchmarks" if bench and bench.skip else "disabled")
            return
        try:
            require_scipy()
            store = Store.of(bench.storage, bench.machine_id)
            self.history = History.load(store, self.settings.baseline, self.settings.history,
                                        self.settings.compare_unlike)
        except GateError as exc:
            raise pytest.UsageError(f"mlpbench gates: {exc}") from None

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.history is None:
            self.forget_verdicts()
            return
        bench = self.config._benchmarksession
        current = {b.fullname: {"extra_info": b.extra_info} for b in bench.benchmarks if not b.has_error}
        machine_info = bench.get_machine_info() if current and self.history.runs else None
        self.verdicts = evaluate(current, self.history, self.gates_for, self.settings.alpha, machine_info)
        self.save_verdicts()
        ran = [v for v in self.verdicts if v.status != "missing"]
        for metric in sorted({v.gate.metric for v in self.verdicts} - {v.gate.metric for v in ran}):
            if ran:
                self.problems.append(f"no benchmark recorded {metric!r}; recorded figures: "
                                     f"{', '.join(recorded_figures(current))}")
        self.problems += [f"{v.gate.text} failed: {v.message()}" for v in self.verdicts if v.failed]
        if self.problems and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def save_verdicts(self) -> None:
        """``gates.json``: the verdicts, replaced in one step, before the session's report is written."""
        directory = self.results_dir()
        if directory is None:
            return
        try:
            text = json.dumps([verdict_record(v) for v in self.verdicts], indent=1) + "\n"
            write_atomic(directory / "gates.json", text)
        except OSError as exc:
            self.problems.append(f"the verdicts were not saved: {exc}")

    def forget_verdicts(self) -> None:
        """No gates this session: an older ``gates.json`` would pass for this session's verdicts."""
        directory = self.results_dir()
        if directory is not None:
            (directory / "gates.json").unlink(missing_ok=True)

    def results_dir(self) -> Path | None:
        """The session's results directory (``--mlpbench-results``, resolved as the session resolves it)."""
        results = self.settings.get("results")
        if not results:
            return None
        path = Path(results)
        return path if path.is_absolute() else Path(self.config.invocation_params.dir) / path

    @pytest.hookimpl(trylast=True)  # last, so the verdicts are next to pytest's exit line
    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.off:
            terminalreporter.write_line(f"mlpbench gates: not evaluated: {self.off}, so no run is saved or compared",
                                        yellow=True, bold=True)
        if self.history is None:
            return
        tr = terminalreporter
        runs, pooled = self.history.runs, self.history.history
        where = runs[-1].label + (f" and up to {pooled - 1} earlier" if pooled > 1 else "") if runs else "none"
        tr.write_sep("-", f"mlpbench gates (baseline: {where}; alpha {self.settings.alpha:g})")
        if not runs:
            bench = self.config._benchmarksession
            saving = "this run is saved as the first" if bench.save or bench.autosave else SAVE_HINT
            tr.write_line(f"mlpbench gates: no baseline yet in {self.history.where}; {saving}; gates pass")
        for line in table(self.verdicts):
            tr.write_line(line)
        for problem in self.problems:
            tr.write_line(f"mlpbench gate: {problem}", red=True, bold=True)


def verdict_record(verdict: Verdict) -> dict:
    """One verdict as an entry of ``gates.json`` (``message``: what the terminal says of a failed gate, else empty)."""
    gate = verdict.gate
    return {"benchmark": verdict.benchmark, "gate": gate.text, "metric": gate.metric, "stat": gate.stat,
            "threshold": gate.threshold, "status": verdict.status, "failed": verdict.failed,
            "baseline": verdict.baseline, "now": verdict.now, "change": verdict.change(),
            "p_value": verdict.p_value, "message": verdict.message() if verdict.failed else "",
            "note": verdict.note, "remark": verdict.remark}
