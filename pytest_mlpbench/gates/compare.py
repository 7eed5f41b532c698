"""``python -m pytest_mlpbench compare``: the gates' table for saved runs,
without running anything."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Iterable

from pytest_mlpbench.gates.history import History
from pytest_mlpbench.gates.identity import mlpbench_info
from pytest_mlpbench.gates.spec import Gate, GateError, parse_gates
from pytest_mlpbench.gates.stats import require_scipy
from pytest_mlpbench.gates.storage import Entry, SavedRun, Store, resolve
from pytest_mlpbench.gates.table import table
from pytest_mlpbench.gates.verdict import Verdict, evaluate, recorded_figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mlpbench compare",
        description="Compare saved pytest-benchmark runs metric by metric. No RUN: the latest run against the "
                    "one(s) before it; one RUN: that run against the one(s) before it; several: the last "
                    "against the others pooled. RUN is a number (3 or 0003), a save name or a file path; several "
                    "JSON files are compared as they are, wherever they lie (no storage needed).",
    )
    parser.add_argument("runs", nargs="*", metavar="RUN")
    add_options(parser)
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


def add_options(parser: argparse.ArgumentParser) -> None:
    """The storage and gate options of ``compare``, shared with ``mlpbench history``."""
    parser.add_argument("--storage", default=".benchmarks",
                        help="pytest-benchmark storage, as its --benchmark-storage: a directory, file://DIR or "
                             "elasticsearch+http[s]://HOST/[INDEX/DOCTYPE?project_name=NAME] (default: .benchmarks)")
    parser.add_argument("--netrc", nargs="?", default="", const="~/.netrc",
                        help="elasticsearch credentials from a netrc file, as pytest-benchmark's --benchmark-netrc")
    parser.add_argument("--machine", help="machine directory in the storage (default: this machine's)")
    parser.add_argument("--fail", action="append", default=[], metavar="METRIC:STAT:THRESHOLD",
                        help="gate to apply (repeatable); without one, every figure's median is compared")
    parser.add_argument("--history", type=int, default=1, metavar="N", help="pool N baseline runs (default: 1)")
    parser.add_argument("--alpha", type=float, default=0.05, help="significance level (default: 0.05)")
    parser.add_argument("--unlike", action="store_true",
                        help="also compare with saved runs that differ from the run compared in workload, scale, "
                             "parameters or machine (default: those are left out, and the output says how they differ)")


def open_saved(args: argparse.Namespace) -> tuple[Store, list[Entry]]:
    """The storage ``args`` name and its machine's saved runs, oldest first; none is an error."""
    from pytest_benchmark.utils import get_machine_id

    store = Store.open(args.storage, args.machine or get_machine_id(), args.netrc)
    entries = store.entries()
    if not entries:
        raise GateError(store.nothing_saved())
    return store, entries


def open_files(args: argparse.Namespace) -> tuple[Store, list[Entry]] | None:
    """Several RUNs that are all JSON files: compared as they are, wherever they lie, without a storage."""
    from pytest_benchmark.utils import get_machine_id

    files = [Path(run).expanduser() for run in args.runs]
    if len(files) < 2 or not all(f.is_file() for f in files):
        return None
    return Store(None, args.machine or get_machine_id(), files[-1].parent), [Entry.file(f) for f in files]


def median_gates(figures: Iterable[str]) -> list[Gate]:
    """What is compared without gates: each figure's median, with no threshold (never fails)."""
    return [Gate(m, "median", 0, text=f"{m}:median") for m in figures]


def current(run: SavedRun) -> dict[str, dict]:
    """The benchmarks of a saved run that mlpbench measured."""
    return {name: b for name, b in run.benchmarks.items() if mlpbench_info(b)}


def compare(args: argparse.Namespace) -> list[Verdict]:
    gates = parse_gates(args.fail, "--fail")
    require_scipy()
    store, entries = open_files(args) or open_saved(args)
    refs = args.runs or [entries[-1].label]
    picked = [resolve(entries, r) for r in refs]
    now = store.read(entries[picked[-1]])
    if len(picked) > 1:
        runs, pooled = [store.read(entries[i]) for i in picked[:-1]], len(picked) - 1
    else:
        runs, pooled = [store.read(e) for e in entries[:picked[-1]]], args.history
    history = History(runs, store.where, pooled, args.unlike, "--unlike")
    print(f"now: {now.path}")
    print(f"baseline: {', '.join(r.label for r in history.runs[-history.history:]) or 'none'}")
    benches = current(now)
    if not gates:
        gates = median_gates(recorded_figures(benches))
    verdicts = evaluate(benches, history, lambda name: gates, args.alpha, now.machine_info)
    return [v for v in verdicts if v.status != "missing" or args.fail]
