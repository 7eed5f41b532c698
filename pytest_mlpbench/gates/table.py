"""The gates' text table: one row per gated figure, notes below it."""
from __future__ import annotations

from typing import Sequence

from pytest_mlpbench.gates.verdict import Verdict, fmt


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
