"""A cost model per architecture, fitted from the scaling sweep's runs by least
squares, each coefficient with its confidence interval:

- fixed cost per run and cost per sequential task: overhead of ``chain-N`` against N;
- cost per parallel task: overhead of ``fanout-W`` against W;
- cost per GiB handed from one step to the next: overhead of ``handoff-S`` against S,
  apart for the runs whose files went through the framework's own data layer;
- how many CPU-bound tasks run side by side: the widest ``fanout-cpu-W`` whose
  tasks' makespan stays within 25% of ``fanout-cpu-1``'s. The makespan is the
  time any of the fan-out's tasks was running (``compute_s`` + ``serial_s``),
  not the run's wall time: a run's fixed cost would hide tasks that queue.
"""
from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

CONFIDENCE = 0.95
SIDE_BY_SIDE = 1.25  # a fan-out's makespan within this factor of one task's: its tasks ran side by side
GIB = 2**30
#: family -> (what its size counts, the unit of the slope in that count, the slope's name)
FAMILIES = {
    "chain": ("tasks", 1, "per_task_s"),
    "fanout": ("parallel tasks", 1, "per_parallel_task_s"),
    "handoff": ("bytes", GIB, "per_gib_s"),
    "handoff-native": ("bytes", GIB, "per_gib_native_s"),
}


@dataclass(frozen=True)
class Coefficient:
    name: str  # fixed_s, per_task_s, per_parallel_task_s, per_gib_s
    value: float
    low: float  # the confidence interval's bounds
    high: float
    runs: int  # the runs it was fitted from

    def text(self) -> str:
        return f"{self.value:.4g} [{self.low:.3g}, {self.high:.3g}]"


def sized(workload: str) -> tuple[str, int] | None:
    """(family, size) of a scaling workload's name: ``("chain", 16)`` of ``chain-16``;
    ``None`` for ``fanout-cpu-4`` (its makespan is not an overhead) and others."""
    family, _, size = workload.rpartition("-")
    return (family, int(size)) if family in FAMILIES and size.isdigit() else None


def linear_fit(xs: Sequence[float], ys: Sequence[float], confidence: float = CONFIDENCE):
    """Intercept and slope of ``y = a + b x`` by least squares, each as (value,
    half-width of its confidence interval); ``None`` with fewer than three
    points or fewer than two sizes."""
    from scipy import stats

    x, y = np.asarray(xs, float), np.asarray(ys, float)
    if len(x) < 3 or len(set(xs)) < 2:
        return None
    design = np.column_stack([np.ones_like(x), x])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ beta
    variance = residual @ residual / (len(x) - 2)
    errors = np.sqrt(np.diag(variance * np.linalg.inv(design.T @ design)))
    t = stats.t.ppf((1 + confidence) / 2, len(x) - 2)
    return [(float(b), float(t * e)) for b, e in zip(beta, errors)]


def points(runs: Iterable[dict]) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """(architecture, family) -> (size, overhead) of each measured scaling run that passed;
    a hand-off goes by how its files really travelled (its record's ``handoff``), not by its name."""
    found: dict[tuple[str, str], list[tuple[int, float]]] = defaultdict(list)
    for run in runs:
        family_size = sized(run["workload"])
        if family_size and run["outcome"] == "passed" and not run["warmup"]:
            family = family_size[0]
            if family.startswith("handoff"):
                family = "handoff-native" if run.get("handoff") == "native" else "handoff"
            found[(run["architecture"], family)].append((family_size[1], run["overhead_s"]))
    return dict(found)


def fit(runs: Iterable[dict], confidence: float = CONFIDENCE) -> dict[str, list[Coefficient]]:
    """Per architecture, the coefficients its scaling runs (report runs or run records' dicts) support."""
    model: dict[str, list[Coefficient]] = defaultdict(list)
    for (arch, family), xy in sorted(points(runs).items()):
        unit = FAMILIES[family][1]
        line = linear_fit([size / unit for size, _ in xy], [overhead for _, overhead in xy], confidence)
        if line is None:
            continue
        (a, da), (b, db) = line
        if family == "chain":
            model[arch].append(Coefficient("fixed_s", a, a - da, a + da, len(xy)))
        model[arch].append(Coefficient(FAMILIES[family][2], b, b - db, b + db, len(xy)))
    return dict(model)


def makespan(run: dict) -> float:
    """How long a fan-out run's tasks were running: its critical path (begin, longest task, gather) and
    the time its other tasks ran beyond the longest; the wall time where those are not recorded."""
    if run.get("compute_s") is None or run.get("serial_s") is None:
        return run["wall_s"]
    return run["compute_s"] + run["serial_s"]


def side_by_side(runs: Iterable[dict]) -> dict[str, int]:
    """Per architecture, the widest CPU-bound fan-out that took about as long as one task
    (median makespan within 25% of ``fanout-cpu-1``'s): where it stops scaling on these cores."""
    walls: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        family, _, width = run["workload"].rpartition("-")
        if family == "fanout-cpu" and width.isdigit() and run["outcome"] == "passed" and not run["warmup"]:
            walls[run["architecture"]][int(width)].append(makespan(run))
    widths = {}
    for arch, by_width in walls.items():
        if 1 in by_width:
            one = statistics.median(by_width[1])
            widths[arch] = max(w for w, found in by_width.items() if statistics.median(found) <= SIDE_BY_SIDE * one)
    return widths


def rows(model: dict[str, list[Coefficient]],
         widths: dict[str, int] | None = None) -> tuple[list[str], list[list[str]]]:
    """The header and one row per architecture: one column per coefficient, value [low, high],
    and the widest fan-out that ran side by side (``-`` where there is none)."""
    widths = widths or {}
    names = ["fixed_s", *(f[2] for f in FAMILIES.values())]
    found = [[arch, *(next((c.text() for c in model.get(arch, []) if c.name == n), "-") for n in names),
              str(widths.get(arch, "-"))] for arch in dict.fromkeys([*model, *widths])]
    return ["architecture", *names, "side by side"], found


def table(model: dict[str, list[Coefficient]], widths: dict[str, int] | None = None) -> list[str]:
    """Markdown: :func:`rows` as a table."""
    header, found = rows(model, widths)
    return [f"| {' | '.join(header)} |", f"|{'---|' * len(header)}", *(f"| {' | '.join(row)} |" for row in found)]
