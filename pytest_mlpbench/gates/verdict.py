"""The decision: one verdict per gated figure of a benchmark, from this run's
per-round values against its baseline's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from pytest_mlpbench.gates.identity import identity, mlpbench_info, passed_rounds, values
from pytest_mlpbench.gates.spec import STATS, Gate
from pytest_mlpbench.gates.stats import rank_test, smallest_p
from pytest_mlpbench.measure.record import FIGURES

if TYPE_CHECKING:
    from pytest_mlpbench.gates.history import History

SAVE_HINT = "this run can be saved with --benchmark-autosave"
NO_BASELINE = f"no baseline yet; {SAVE_HINT}"


@dataclass
class Verdict:
    benchmark: str
    gate: Gate
    baseline: float | None = None
    now: float | None = None
    p_value: float | None = None
    status: str = "ok"  # ok, FAIL, higher, lower, same, new, missing
    note: str = ""
    remark: str = ""  # how the baseline was chosen where saved runs unlike this one were met

    @property
    def failed(self) -> bool:
        return self.status == "FAIL"

    def change(self) -> str:
        if self.baseline is None or self.now is None:
            return ""
        delta = self.now - self.baseline
        rel = f"{delta / abs(self.baseline):+.1%}" if self.baseline else ("+inf%" if delta else "+0.0%")
        return f"{rel} ({'+' if delta >= 0 else '-'}{fmt(self.gate.metric, abs(delta))})"

    def message(self) -> str:
        p = f"p={self.p_value:.3g}" if self.p_value is not None else self.note
        return (f"{self.benchmark}: {self.gate.metric} {self.gate.stat} {fmt(self.gate.metric, self.baseline)} -> "
                f"{fmt(self.gate.metric, self.now)}, {self.change()}, beyond {self.gate.threshold} ({p})")


def decide(benchmark: str, gate: Gate, base: Sequence[float], now: Sequence[float], alpha: float) -> Verdict:
    """Gate one figure of one benchmark: past the threshold and significant -> FAIL."""
    verdict = Verdict(benchmark, gate)
    if not now:
        verdict.status, verdict.note = "missing", f"{gate.metric} not recorded by this run"
        return verdict
    verdict.now = STATS[gate.stat](now)
    if not base:
        verdict.status, verdict.note = "new", NO_BASELINE
        return verdict
    verdict.baseline = STATS[gate.stat](base)
    testable = smallest_p(len(now), len(base)) <= alpha
    if testable:
        alternative = {1: "greater", -1: "less", 0: "two-sided"}[gate.sign]
        verdict.p_value = rank_test(now, base, alternative)
    else:
        verdict.note = (f"too few rounds for a rank test ({len(now)} now, {len(base)} baseline: the smallest "
                        f"possible p is {smallest_p(len(now), len(base)):.3g} > alpha {alpha:g}); plain threshold")
    significant = not testable or verdict.p_value <= alpha
    if gate.sign == 0:
        higher = verdict.now > verdict.baseline
        verdict.status = ("higher" if higher else "lower") if significant and verdict.now != verdict.baseline else "same"
    elif exceeds(gate, verdict.baseline, verdict.now) and significant:
        verdict.status = "FAIL"
    return verdict


def exceeds(gate: Gate, baseline: float, now: float) -> bool:
    worse = (now - baseline) * gate.sign
    if not gate.relative:
        return worse > gate.limit
    if baseline == 0:
        return worse > 0
    return worse / abs(baseline) * 100 > gate.limit


def evaluate(current: dict[str, dict], history: History, gates_for: Callable[[str], list[Gate]],
             alpha: float, machine_info: dict | None) -> list[Verdict]:
    """Verdicts for every gate of every current benchmark (fullname -> saved-format benchmark),
    run on the machine ``machine_info`` describes."""
    verdicts = []
    for fullname, bench in current.items():
        info = mlpbench_info(bench)
        if info is None:
            continue
        now_rounds = passed_rounds(info)
        found = history.baseline(fullname, identity(info, machine_info))
        for gate in gates_for(fullname):
            verdict = decide(fullname, gate, values(found.rounds, gate.metric), values(now_rounds, gate.metric), alpha)
            verdict.remark = history.remark(found)
            verdicts.append(verdict)
    return verdicts


def recorded_figures(current: dict[str, dict]) -> list[str]:
    names = dict.fromkeys(FIGURES)
    for bench in current.values():
        for r in passed_rounds(mlpbench_info(bench) or {}):
            names.update(dict.fromkeys(k for k, v in r.items() if isinstance(v, (int, float)) and k != "outcome"))
    return list(names)


def fmt(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    if metric.endswith("_bytes"):
        for unit in ("B", "KiB", "MiB"):
            if abs(value) < 1024:
                return f"{value:.4g} {unit}"
            value /= 1024
        return f"{value:.4g} GiB"
    if metric.endswith("_s"):
        return f"{value:.4g} s"
    return f"{value:.4g}"
