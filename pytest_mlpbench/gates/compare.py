"""``python -m pytest_mlpbench compare``: the gates' table for saved runs,
without running anything."""
from __future__ import annotations

import argparse
import sys

from pytest_mlpbench.gates.history import History
from pytest_mlpbench.gates.identity import mlpbench_info
from pytest_mlpbench.gates.spec import Gate, GateError, parse_gates
from pytest_mlpbench.gates.stats import require_scipy
from pytest_mlpbench.gates.storage import Store, resolve
from pytest_mlpbench.gates.table import table
from pytest_mlpbench.gates.verdict import Verdict, evaluate, recorded_figures


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mlpbench compare",
        description="Compare saved pytest-benchmark runs metric by metric. No RUN: the latest run against the "
                    "one(s) before it; one RUN: that run against the one(s) before it; several: the last "
                    "against the others pooled. RUN is a number (3 or 0003), a save name or a file path.",
    )
    parser.add_argument("runs", nargs="*", metavar="RUN")
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
    store = Store.open(args.storage, args.machine or get_machine_id(), args.netrc)
    entries = store.entries()
    if not entries:
        raise GateError(store.nothing_saved())
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
    current = {name: b for name, b in now.benchmarks.items() if mlpbench_info(b)}
    if not gates:
        gates = [Gate(m, "median", 0, text=f"{m}:median") for m in recorded_figures(current)]
    verdicts = evaluate(current, history, lambda name: gates, args.alpha, now.machine_info)
    return [v for v in verdicts if v.status != "missing" or args.fail]
