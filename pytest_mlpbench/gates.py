"""Regression gates on any figure of the run record, against the runs that
pytest-benchmark saved (``--benchmark-autosave`` / ``--benchmark-save``).

A gate ``METRIC:STAT:THRESHOLD`` fails only when STAT of the per-round values
moved past THRESHOLD in the worse direction *and* a one-sided Mann-Whitney U
test over the per-round values says the shift is significant, so noise alone
does not fail CI. With too few rounds for the test to ever reach ``alpha`` the
gate says so and falls back to the plain threshold.

A saved benchmark is a baseline only when it ran the same workload at the same
scale with the same parameters (data source included) on the same kind of
machine; any other is left out and the verdict says which field differed.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .record import FIGURES

STATS: dict[str, Callable[[Sequence[float]], float]] = {
    "min": min,
    "median": statistics.median,
    "mean": statistics.fmean,
    "max": max,
}
SAVE_HINT = "this run can be saved with --benchmark-autosave"
NO_BASELINE = f"no baseline yet; {SAVE_HINT}"
LIKE = "same workload, scale, parameters and machine"
_METRIC = re.compile(r"^[A-Za-z_][\w.\->]*$")
_THRESHOLD = re.compile(r"^([+-])(\d+(?:\.\d*)?|\.\d+)(%?)$")
_RUN_FILE = re.compile(r"^(\d{4})_.*\.json$")
#: Exact permutation distribution up to this many splits (ties make scipy's
#: "auto" method fall back to a normal approximation that is too eager for
#: a handful of rounds).
_EXACT_SPLITS = 20000


class GateError(ValueError):
    """Bad gate input: an expression, a baseline reference or a saved file."""


# -- expressions --------------------------------------------------------------


@dataclass(frozen=True)
class Gate:
    metric: str
    stat: str
    #: +1: higher is worse; -1: lower is worse; 0: no threshold (``compare`` without gates)
    sign: int
    limit: float = 0.0
    relative: bool = False
    text: str = ""

    @property
    def threshold(self) -> str:
        return self.text.rsplit(":", 1)[-1] if self.sign else "-"


def parse_gate(text: str) -> Gate:
    """``METRIC:STAT:THRESHOLD``, e.g. ``overhead_s:median:+20%`` or ``accuracy:min:-0.01``."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise GateError(f"{text!r} is not METRIC:STAT:THRESHOLD, e.g. overhead_s:median:+20% or accuracy:min:-0.01")
    metric, stat, threshold = (p.strip() for p in parts)
    if not _METRIC.match(metric):
        raise GateError(f"METRIC {metric!r} is not a figure name; figures: {', '.join(FIGURES)} or a workload metric")
    if stat not in STATS:
        raise GateError(f"STAT {stat!r} is not one of {', '.join(STATS)}")
    found = _THRESHOLD.match(threshold)
    if not found:
        raise GateError(
            f"THRESHOLD {threshold!r} must be a signed number, optionally a percentage: +10% or +0.5 "
            "(an increase is worse), -2% or -0.01 (a decrease is worse)"
        )
    sign, number, percent = found.groups()
    return Gate(metric, stat, 1 if sign == "+" else -1, float(number), bool(percent), f"{metric}:{stat}:{threshold}")


def significance_level(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise ValueError("must be between 0 and 1, e.g. 0.05")
    return value


def parse_gates(texts: Iterable[str], source: str) -> list[Gate]:
    try:
        return [parse_gate(t) for t in texts]
    except GateError as exc:
        raise GateError(f"{source}: {exc}") from None


# -- saved runs ---------------------------------------------------------------


@dataclass
class SavedRun:
    path: Path
    number: int
    benchmarks: dict[str, dict] = field(default_factory=dict)  # fullname -> saved benchmark
    machine_info: dict | None = None

    @property
    def label(self) -> str:
        return self.path.stem


def storage_dir(storage: str) -> Path:
    """The directory of a pytest-benchmark ``--benchmark-storage`` value."""
    if storage.startswith("file://"):
        storage = storage[len("file://"):]
    elif "://" in storage:
        raise GateError(f"--benchmark-storage={storage!r}: mlpbench gates read file storage only")
    return Path(storage).expanduser().resolve()


def load_run(path: Path) -> SavedRun:
    """One saved run; a file that is not pytest-benchmark JSON is an error naming it."""
    try:
        data = json.loads(path.read_text(encoding="utf8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GateError(f"{path}: not readable as JSON ({exc}); delete or move it out of the benchmark storage")
    benches = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benches, list) or not all(isinstance(b, dict) and "fullname" in b for b in benches):
        raise GateError(
            f"{path}: not a pytest-benchmark result file (expected an object with a 'benchmarks' list); "
            "delete or move it out of the benchmark storage"
        )
    number = _RUN_FILE.match(path.name)
    machine = data.get("machine_info")
    return SavedRun(path, int(number.group(1)) if number else 0, {b["fullname"]: b for b in benches},
                    machine if isinstance(machine, dict) else None)


def run_files(directory: Path) -> list[Path]:
    """Numbered run files (``NNNN_*.json``) in a machine directory, oldest first."""
    if not directory.is_dir():
        return []
    return sorted((p for p in directory.iterdir() if _RUN_FILE.match(p.name)), key=lambda p: p.name)


def resolve(files: list[Path], ref: str) -> int:
    """Index in ``files`` of the run ``ref`` names: a number, a save name, a file stem or a path."""
    path = Path(ref).expanduser()
    if path.is_file():
        matches = [i for i, f in enumerate(files) if f.resolve() == path.resolve()]
    elif ref.isdigit():
        matches = [i for i, f in enumerate(files) if int(f.name[:4]) == int(ref)]
    else:
        matches = [i for i, f in enumerate(files)
                   if ref in (f.stem, f.stem.split("_", 1)[1]) or f.stem.startswith(ref) or f.name == ref]
    if not matches:
        known = ", ".join(f.stem for f in files[-5:]) or "none"
        raise GateError(f"run {ref!r} matches no saved run (latest: {known})")
    return matches[-1]


class History:
    """The saved runs a session or ``compare`` gates against."""

    def __init__(self, runs: list[SavedRun], where: Path, history: int, unlike: bool = False,
                 hint: str = "--mlpbench-compare-unlike=yes"):
        self.runs = runs  # oldest first, ending at the chosen baseline
        self.where = where
        self.history = history
        self.unlike = unlike  # pool saved runs that differ from this one, saying how
        self.hint = hint  # the option that sets ``unlike``, for messages

    @classmethod
    def load(cls, directory: Path, ref: str | None = None, history: int = 1, unlike: bool = False) -> "History":
        files = run_files(directory)
        path = Path(ref).expanduser() if ref else None
        if path and path.is_file() and path.resolve() not in [f.resolve() for f in files]:
            files = [path]  # a run saved elsewhere: it alone is the baseline
        end = resolve(files, ref) + 1 if ref is not None else len(files)
        return cls([load_run(f) for f in files[:end]], directory, history, unlike)

    def baseline(self, fullname: str, like: dict) -> "Baseline":
        """Per-round values of a benchmark pooled over its ``history`` latest saved runs
        whose :func:`identity` is ``like``; the others are left out (or, with ``unlike``, pooled) and listed."""
        found = Baseline()
        for run in reversed(self.runs):
            info = mlpbench_info(run.benchmarks.get(fullname))
            if info is None:
                continue
            differ = differences(identity(info, run.machine_info), like)
            if differ:
                found.unlike.append(f"{run.label} differs in {', '.join(differ)}")
                if not self.unlike:
                    continue
            found.rounds = passed_rounds(info) + found.rounds
            found.runs.append(run)
            if len(found.runs) == self.history:
                break
        return found

    def remark(self, found: "Baseline") -> str:
        """What a verdict says about its baseline's choice; empty when every saved run was alike."""
        if not found.unlike:
            return ""
        more = len(found.unlike) - 1
        listed = found.unlike[0] + (f" (and {more} more unlike run{'s' if more > 1 else ''})" if more else "")
        if self.unlike:
            return f"compared anyway ({self.hint}): {'; '.join(found.unlike)}"
        if not found.runs:
            return f"new: no baseline with the {LIKE}: {listed}; {self.hint} compares anyway"
        return f"left out: {listed}"


@dataclass
class Baseline:
    rounds: list[dict] = field(default_factory=list)
    runs: list[SavedRun] = field(default_factory=list)
    unlike: list[str] = field(default_factory=list)  # "LABEL differs in ..." of each unlike run met, newest first


# -- what a baseline must share ---------------------------------------------------


def fingerprint(machine_info: dict | None) -> dict | None:
    """The fields of pytest-benchmark's ``machine_info`` that make two machines the same for
    benchmarking (docs/gates.md says why these): not the host name, kernel release or Python patch level."""
    if not isinstance(machine_info, dict):
        return None
    cpu = machine_info.get("cpu") if isinstance(machine_info.get("cpu"), dict) else {}
    ours = machine_info.get("mlpbench") if isinstance(machine_info.get("mlpbench"), dict) else {}
    version = str(machine_info.get("python_version") or "")
    return {
        "system": machine_info.get("system"),
        "arch": machine_info.get("machine"),
        "cpu": cpu.get("brand_raw"),
        "cpus": cpu.get("count") or ours.get("cpu_count"),
        "python": f"{machine_info.get('python_implementation')} {'.'.join(version.split('.')[:2])}",
    }


def identity(info: dict, machine_info: dict | None) -> dict:
    """What a saved benchmark must share with this run to be its baseline. ``params`` and
    ``machine`` are None where the file does not record them (runs saved before mlpbench did)."""
    params = info.get("params")
    return {"workload": info.get("workload"), "scale": info.get("scale"),
            "params": params if isinstance(params, dict) else None, "machine": fingerprint(machine_info)}


_MISSING = object()
_UNKNOWN = {"params": ("workload parameters", "predates their recording"),
            "machine": ("machine", "has no machine_info")}


def differences(saved: dict, now: dict) -> list[str]:
    """``FIELD (saved X, now Y)`` for every field of two :func:`identity` values that differs."""
    found = [_differs(key, saved[key], now[key]) for key in ("workload", "scale") if saved[key] != now[key]]
    for section, prefix in (("params", ""), ("machine", "machine.")):
        old, new = saved[section], now[section]
        if old is None or new is None:
            what, why = _UNKNOWN[section]
            side = "neither run records them" if old is None and new is None else (
                f"the saved run {why}" if old is None else "this run does not record them")
            found.append(f"{what} (unknown: {side})")
            continue
        found += [_differs(prefix + key, old.get(key, _MISSING), new.get(key, _MISSING))
                  for key in {**old, **new} if old.get(key, _MISSING) != new.get(key, _MISSING)]
    return found


def _differs(name: str, saved, now) -> str:
    return f"{name} (saved {_show(name, saved)}, now {_show(name, now)})"


def _show(name: str, value) -> str:
    if value is _MISSING:
        return "not set"
    if name == "data_dir" and value is None:
        return "generated data"
    return json.dumps(value, default=str)


def mlpbench_info(bench: dict | None) -> dict | None:
    info = ((bench or {}).get("extra_info") or {}).get("mlpbench")
    return info if isinstance(info, dict) else None


def passed_rounds(info: dict) -> list[dict]:
    return [r for r in info.get("rounds") or [] if isinstance(r, dict) and r.get("outcome", "passed") == "passed"]


def values(rounds: list[dict], metric: str) -> list[float]:
    return [float(r[metric]) for r in rounds if isinstance(r.get(metric), (int, float))]


# -- the decision --------------------------------------------------------------


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


def smallest_p(n_now: int, n_base: int) -> float:
    """The smallest p-value a one-sided rank test can give with these sample sizes."""
    return 1.0 / math.comb(n_now + n_base, n_now)


def require_scipy() -> None:
    try:
        import scipy.stats  # noqa: F401
    except ImportError as exc:
        raise GateError(f"the gates' rank test needs scipy ({exc}); install it with: pip install scipy") from None


def rank_test(now: Sequence[float], base: Sequence[float], alternative: str) -> float:
    from scipy.stats import PermutationMethod, mannwhitneyu

    method = "auto"
    if len(set(now) | set(base)) < len(now) + len(base) and math.comb(len(now) + len(base), len(now)) <= _EXACT_SPLITS:
        method = PermutationMethod(n_resamples=_EXACT_SPLITS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(mannwhitneyu(now, base, alternative=alternative, method=method).pvalue)
    return 1.0 if math.isnan(p) else p


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


# -- the table ----------------------------------------------------------------


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


def table(verdicts: Sequence[Verdict]) -> list[str]:
    """Text lines: one row per gated figure, notes below, then how baselines were chosen."""
    header = ["benchmark", "metric", "stat", "limit", "baseline", "now", "change", "p-value", "verdict"]
    rows, notes = [], []
    for v in verdicts:
        fallback = bool(v.note) and v.status not in ("new", "missing")
        if fallback:
            notes.append(v.note)
        p = f"{v.p_value:.3g}" if v.p_value is not None else ("n/a*" if fallback else "")
        rows.append([v.benchmark, v.gate.metric, v.gate.stat, v.gate.threshold, fmt(v.gate.metric, v.baseline),
                     fmt(v.gate.metric, v.now), v.change(), p, v.status if v.status != "new" else "new (passes)"])
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    lines += [f"* {n}" for n in dict.fromkeys(notes)]
    lines += list(dict.fromkeys(f"{v.benchmark}: {v.remark}" for v in verdicts if v.remark))
    return lines


# -- python -m pytest_mlpbench compare ----------------------------------------


def compare_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mlpbench compare",
        description="Compare saved pytest-benchmark runs metric by metric. No RUN: the latest run against the "
                    "one(s) before it; one RUN: that run against the one(s) before it; several: the last "
                    "against the others pooled. RUN is a number (3 or 0003), a save name or a file path.",
    )
    parser.add_argument("runs", nargs="*", metavar="RUN")
    parser.add_argument("--storage", default=".benchmarks", help="pytest-benchmark storage (default: .benchmarks)")
    parser.add_argument("--machine", help="machine directory in the storage (default: this machine's)")
    parser.add_argument("--fail", action="append", default=[], metavar="METRIC:STAT:THRESHOLD",
                        help="gate to apply (repeatable); without one, every figure's median is compared")
    parser.add_argument("--history", type=int, default=1, metavar="N", help="pool N baseline runs (default: 1)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    parser.add_argument("--unlike", action="store_true",
                        help="also compare with saved runs that differ from RUN in workload, scale, parameters or "
                             "machine (default: those are left out, and the output says how they differ)")
    args = parser.parse_args(argv)
    try:
        verdicts = compare(args)
    except GateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for line in table(verdicts):
        print(line)
    failed = [v for v in verdicts if v.failed]
    for v in failed:
        print(f"FAILED gate {v.gate.text}: {v.message()}")
    return 1 if failed else 0


def compare(args: argparse.Namespace) -> list[Verdict]:
    from pytest_benchmark.utils import get_machine_id

    gates = parse_gates(args.fail, "--fail")
    require_scipy()
    root = storage_dir(args.storage)
    directory = root / (args.machine or get_machine_id())
    files = run_files(directory)
    if not files:
        machines = ", ".join(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else "none"
        raise GateError(f"no saved runs in {directory} (machine directories in {root}: {machines or 'none'})")
    refs = args.runs or [files[-1].stem]
    picked = [resolve(files, r) for r in refs]
    now = load_run(files[picked[-1]])
    if len(picked) > 1:
        runs, pooled = [load_run(files[i]) for i in picked[:-1]], len(picked) - 1
    else:
        runs, pooled = [load_run(f) for f in files[:picked[-1]]], args.history
    history = History(runs, directory, pooled, args.unlike, "--unlike")
    print(f"now: {now.path}")
    print(f"baseline: {', '.join(r.label for r in history.runs[-history.history:]) or 'none'}")
    current = {name: b for name, b in now.benchmarks.items() if mlpbench_info(b)}
    if not gates:
        gates = [Gate(m, "median", 0, text=f"{m}:median") for m in recorded_figures(current)]
    verdicts = evaluate(current, history, lambda name: gates, args.alpha, now.machine_info)
    return [v for v in verdicts if v.status != "missing" or args.fail]
