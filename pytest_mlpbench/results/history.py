"""``mlpbench history``: every figure of every benchmark across the runs saved in
pytest-benchmark's storage, as trend plots, each saved run marked with the
gates' verdict against the run(s) saved before it.

Writes ``<out>/history/``: one PNG per benchmark and figure (x: the saved runs,
oldest first; y: the median over the run's passed rounds, with a bar from the
smallest to the largest round) and ``history.md``, a table of the runs and their
verdicts per figure that links the PNGs. The folder is this command's own: a
PNG in it that the latest call did not write is removed, so a report that
embeds every PNG there shows the current history only.

The verdict of saved run *k* is what ``mlpbench compare K`` gives: the same
storage, the same gates (``--fail``; without any, every figure's median is
compared and never fails), the same ``--history N`` pooling of the like runs
before it, the same rule that runs of another workload, scale, parameters or
machine are no baseline (``--unlike`` pools them anyway). Figures that no
``--fail`` gate names are compared by their median as well, so every point has
a verdict: ``failed`` (a gate on that figure failed), ``passed`` or ``no
baseline`` (the first run, or no like run before it: the notes say why).
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import math
import re
import statistics
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

from pytest_mlpbench.gates.compare import add_options, current, median_gates, open_saved
from pytest_mlpbench.gates.history import History
from pytest_mlpbench.gates.identity import mlpbench_info, passed_rounds, values
from pytest_mlpbench.gates.spec import Gate, GateError, parse_gates
from pytest_mlpbench.gates.stats import require_scipy
from pytest_mlpbench.gates.storage import SavedRun
from pytest_mlpbench.gates.verdict import Verdict, evaluate, fmt, recorded_figures
from pytest_mlpbench.results.atomic import write_atomic

#: The folder under the results directory that holds the plots and ``history.md``.
FOLDER = "history"
PASSED, FAILED, NEW = "passed", "failed", "no baseline"
MARKS = {PASSED: "✓", FAILED: "✗", NEW: "∅"}
STYLE = {
    PASSED: {"marker": "o", "color": "#2e7d32", "markersize": 6},
    FAILED: {"marker": "X", "color": "#c62828", "markersize": 10},
    NEW: {"marker": "o", "color": "#757575", "markerfacecolor": "white", "markersize": 6},
}
DPI = 80
MAX_TICK_LABELS = 30
_STAMP = re.compile(r"_?(\d{8})_(\d{6})")


@dataclass
class Point:
    run: int  # the saved run's place, oldest first (0 for the first)
    median: float  # over the run's passed rounds, in the figure's unit (s, bytes, ...)
    low: float  # the smallest round
    high: float  # the largest round
    rounds: int
    verdict: str  # passed, failed, no baseline
    detail: str  # what the gates said: each gate's status, change and p-value, or why there is no baseline


@dataclass
class Series:
    benchmark: str
    figure: str
    gates: list[str]  # the --fail gates on this figure; empty: its median is compared, which never fails
    points: list[Point] = field(default_factory=list)
    file: str = ""  # the PNG's name in the history folder


@dataclass
class Plotted:
    """What a plot shows, read back from what was drawn on it."""

    path: Path
    labels: list[str]  # x tick label of each point: the saved run's number, name and date
    medians: list[float]  # y of each point, in ``unit``
    spread: list[tuple[float, float]]  # the bar of each point (smallest and largest round), in ``unit``
    verdicts: list[str]  # the marker of each point: passed, failed, no baseline
    unit: str


@dataclass
class Written:
    markdown: Path
    runs: list[SavedRun]
    verdicts: list[list[Verdict]]  # per saved run, oldest first: its verdicts against the runs before it
    plots: list[Plotted]

    @property
    def latest_failed(self) -> list[Verdict]:
        return [v for v in self.verdicts[-1] if v.failed]


def require_matplotlib() -> None:
    try:
        for name in ("matplotlib", "matplotlib.backends.backend_agg"):
            importlib.import_module(name)
    except ImportError as exc:
        raise GateError(f"mlpbench history draws its plots with matplotlib, which cannot be imported ({exc}); "
                        "install it with: pip install matplotlib") from None


def judge(runs: Sequence[SavedRun], where: Path | str, gates: list[Gate],
          args: argparse.Namespace) -> list[list[Verdict]]:
    """Each saved run's verdicts against the runs before it, as ``mlpbench compare`` gives them for that run,
    and the median of every figure no gate names."""
    gated = {g.metric for g in gates}
    judged = []
    for k, now in enumerate(runs):
        history = History(list(runs[:k]), where, args.history, args.unlike, "--unlike")
        benches = current(now)
        rest = median_gates(f for f in recorded_figures(benches) if f not in gated)
        judged.append(evaluate(benches, history, lambda name, checks=gates + rest: checks, args.alpha,
                               now.machine_info))
    return judged


def run_verdict(verdicts: Sequence[Verdict]) -> str:
    if any(v.failed for v in verdicts):
        return FAILED
    judged = [v for v in verdicts if v.status != "missing"]
    return NEW if all(v.status == "new" for v in judged) else PASSED


def _figures(rounds: list[dict]) -> list[str]:
    return list(dict.fromkeys(k for r in rounds for k, v in r.items()
                              if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "outcome"))


def _describe(v: Verdict, first: bool) -> str:
    if v.status == "new":
        if v.remark:
            return v.remark
        return "the first saved run" if first else "no saved run before it has this benchmark"
    what = v.gate.text if v.gate.sign else "median"
    p = f"p={v.p_value:.3g}" if v.p_value is not None else "too few rounds for the rank test: plain threshold"
    status = {"ok": "passed", "FAIL": "FAILED"}.get(v.status, v.status)
    return f"{what} {status}: {fmt(v.gate.metric, v.baseline)} -> {fmt(v.gate.metric, v.now)}, {v.change()} ({p})"


def series(runs: Sequence[SavedRun], judged: Sequence[Sequence[Verdict]], gates: list[Gate]) -> list[Series]:
    """One series per benchmark and recorded figure, a point per saved run that has it."""
    found: dict[tuple[str, str], Series] = {}
    order: dict[str, dict] = {}  # every benchmark once, first seen first, for the figures' order
    for k, (run, verdicts) in enumerate(zip(runs, judged)):
        by_figure: dict[tuple[str, str], list[Verdict]] = {}
        for v in verdicts:
            by_figure.setdefault((v.benchmark, v.gate.metric), []).append(v)
        for name, bench in current(run).items():
            order.setdefault(name, bench)
            rounds = passed_rounds(mlpbench_info(bench))
            for figure in _figures(rounds):
                got = values(rounds, figure)
                said = [v for v in by_figure.get((name, figure), []) if v.status != "missing"]
                if not got or not said:
                    continue
                verdict = (FAILED if any(v.failed for v in said) else
                           NEW if all(v.status == "new" for v in said) else PASSED)
                detail = "; ".join(dict.fromkeys(_describe(v, k == 0) for v in said))
                line = found.setdefault((name, figure), Series(name, figure, [g.text for g in gates
                                                                              if g.metric == figure]))
                line.points.append(Point(k, statistics.median(got), min(got), max(got), len(got), verdict, detail))
    names = list(order)
    figures = recorded_figures({f"{i}": bench for i, bench in enumerate(order.values())})
    rank = {f: i for i, f in enumerate(figures)}
    return sorted(found.values(), key=lambda s: (names.index(s.benchmark), rank.get(s.figure, len(rank)), s.figure))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-") or "_"


def file_names(lines: Sequence[Series]) -> None:
    """Give every series a stable, safe PNG name, ``BENCHMARK--FIGURE.png`` with everything but
    letters, digits, ``_.-`` replaced; a name two series would share, or a long one, gets a hash of its own."""
    names = {}
    for s in lines:
        stem = f"{_slug(s.benchmark)}--{_slug(s.figure)}"
        names.setdefault(stem if len(stem) <= 120 else stem[:120], []).append(s)
    for stem, sharing in names.items():
        for s in sharing:
            unique = len(sharing) == 1 and len(f"{_slug(s.benchmark)}--{_slug(s.figure)}") <= 120
            tag = hashlib.sha1(f"{s.benchmark}\0{s.figure}".encode()).hexdigest()[:8]
            s.file = f"{stem}.png" if unique else f"{stem}-{tag}.png"


def run_name(run: SavedRun) -> str:
    """A saved run's save name: its label without the number and pytest-benchmark's date stamp."""
    name = run.label.partition("_")[2] if re.match(r"^\d{4}_", run.label) else run.label
    return _STAMP.sub("", name).strip("_") or name


def saved_date(run: SavedRun) -> str:
    if run.saved_at:
        try:
            return datetime.fromisoformat(run.saved_at.replace("Z", "+00:00")).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            pass
    stamp = _STAMP.search(run.label)
    if stamp:
        day, time = stamp.groups()
        return f"{day[:4]}-{day[4:6]}-{day[6:]} {time[:2]}:{time[2:4]}"
    return ""


def tick_label(run: SavedRun) -> str:
    name = run_name(run)
    name = name if len(name) <= 18 else name[:17] + "…"
    return "\n".join(filter(None, [f"{run.number:04d} {name}", saved_date(run)]))


def _unit(figure: str) -> tuple[float, str]:
    if figure.endswith("_bytes"):
        return 2.0 ** 20, "MiB"
    if figure.endswith("_s"):
        return 1.0, "s"
    return 1.0, ""


def plot(line: Series, runs: Sequence[SavedRun], directory: Path) -> Plotted:
    """Draw one series into ``directory/line.file``; return what the plot shows, read back from its artists."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    scale, unit = _unit(line.figure)
    xs = [p.run for p in line.points]
    medians = [p.median / scale for p in line.points]
    below = [(p.median - p.low) / scale for p in line.points]
    above = [(p.high - p.median) / scale for p in line.points]
    labels = [tick_label(runs[x]) for x in xs]
    width = min(max(6.0, 0.55 * len(xs) + 3.0), 24.0)
    fig = Figure(figsize=(width, 3.6))
    FigureCanvasAgg(fig)
    # fixed margins, in inches: the title above, the run labels below, the legend right (one draw, not two)
    fig.subplots_adjust(left=0.85 / width, right=1 - 1.05 / width, top=0.82, bottom=0.27)
    ax = fig.add_subplot()
    bars = ax.errorbar(xs, medians, yerr=[below, above], color="#90a4ae", ecolor="#607d8b", elinewidth=1.2,
                       capsize=4, linewidth=1, zorder=1)
    for verdict, style in STYLE.items():
        picked = [i for i, p in enumerate(line.points) if p.verdict == verdict]
        if picked:
            ax.plot([xs[i] for i in picked], [medians[i] for i in picked], linestyle="none", label=verdict,
                    zorder=2, **style)
    every = math.ceil(len(xs) / MAX_TICK_LABELS)
    ax.set_xticks(xs, [label if i % every == 0 or i == len(xs) - 1 else "" for i, label in enumerate(labels)],
                  rotation=30, ha="right", fontsize=7)
    ax.set_xlim(min(xs) - 0.5, max(xs) + 0.5)
    if all(p.low >= 0 for p in line.points):
        top = max(p.high for p in line.points) / scale
        ax.set_ylim(bottom=0, top=top * 1.12 if top > 0 else 1.0)
    ax.set_ylabel(f"{line.figure}" + (f" ({unit})" if unit else ""), fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.grid(axis="y", alpha=0.3)
    gates = ", ".join(line.gates) if line.gates else "median compared, no gate"
    ax.set_title(f"{line.benchmark}\n{line.figure}: median of rounds, bar min..max; {gates}", fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)  # beside: hides no point
    path = directory / line.file
    fig.savefig(path, dpi=DPI)
    drawn, _, (segments, *_) = bars.lines
    verdict_at = {x: artist.get_label() for artist in ax.get_lines() if artist.get_label() in STYLE
                  for x in artist.get_xdata()}
    return Plotted(path, labels, [float(y) for y in drawn.get_ydata()],
                   [(float(seg[0][1]), float(seg[1][1])) for seg in segments.get_segments()],
                   [verdict_at[x] for x in drawn.get_xdata()], unit)


def _cell(figure: str, point: Point | None) -> str:
    if point is None:
        return ""
    text = f"{fmt(figure, point.median)} {MARKS[point.verdict]}"
    return f"**{text}**" if point.verdict == FAILED else text


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(runs: Sequence[SavedRun], judged: Sequence[Sequence[Verdict]], lines: Sequence[Series],
             gates: list[Gate], args: argparse.Namespace, where: Path | str) -> str:
    pooled = (f"the {args.history} like saved runs before it pooled" if args.history != 1
              else "the like saved run before it")
    unlike = "; unlike runs pooled too (--unlike)" if args.unlike else ""
    if gates:
        rule = (f"gates {', '.join(f'`{g.text}`' for g in gates)}; figures without a gate: their median is "
                "compared, which never fails")
    else:
        rule = "no gates (`--fail`): every figure's median is compared, which never fails"
    out = [
        "# Benchmark history", "",
        f"Saved runs in `{where}`, oldest first. Each run is judged as `mlpbench compare RUN` judges it, against "
        f"{pooled} (same workload, scale, parameters and machine{unlike}): "
        f"{rule}; alpha {args.alpha:g}. A point is the median over the run's passed rounds, its bar the smallest "
        f"to the largest round. {MARKS[PASSED]} passed, {MARKS[FAILED]} failed, {MARKS[NEW]} no baseline.", "",
        "| run | saved | benchmarks | verdict |", "|---|---|---|---|",
    ]
    for run, verdicts in zip(runs, judged):
        verdict = run_verdict(verdicts)
        failed = sorted({f"{v.benchmark} {v.gate.text}" for v in verdicts if v.failed})
        shown = f"**{verdict}**: {', '.join(failed)}" if failed else verdict
        out.append(f"| {_md(run.label)} | {saved_date(run)} | {len(current(run))} | {_md(shown)} |")
    by_benchmark: dict[str, list[Series]] = {}
    for line in lines:
        by_benchmark.setdefault(line.benchmark, []).append(line)
    for name, group in by_benchmark.items():
        places = sorted({p.run for line in group for p in line.points})
        out += ["", f"## `{name}`", "",
                "| run | " + " | ".join(f"[{_md(line.figure)}]({line.file})" for line in group) + " |",
                "|---|" + "---|" * len(group)]
        for k in places:
            at = [next((p for p in line.points if p.run == k), None) for line in group]
            out.append(f"| {_md(runs[k].label)} | " + " | ".join(_md(_cell(line.figure, p))
                                                               for line, p in zip(group, at)) + " |")
        notes = []
        for k in places:
            for line in group:
                for p in line.points:
                    if p.run == k and p.verdict == FAILED:
                        notes.append(f"- {runs[k].label}: {line.figure}: {p.detail}")
            remarks = dict.fromkeys(v.remark for v in judged[k] if v.benchmark == name and v.remark)
            notes += [f"- {runs[k].label}: {remark}" for remark in remarks]
        gated = [line for line in group if line.gates]
        if gated:
            notes.insert(0, "- gates: " + "; ".join(f"{line.figure}: {', '.join(line.gates)}" for line in gated))
        if notes:
            out += ["", *notes]
    return "\n".join(out) + "\n"


def write_history(args: argparse.Namespace) -> Written:
    gates = parse_gates(args.fail, "--fail")
    require_scipy()
    require_matplotlib()
    store, entries = open_saved(args)
    runs = [store.read(e) for e in entries]
    if not any(current(run) for run in runs):
        raise GateError(f"nothing to plot: none of the {len(runs)} saved run(s) in {store.where} has a benchmark "
                        "mlpbench measured (extra_info['mlpbench'])")
    recorded = {f for run in runs for b in current(run).values() for f in _figures(passed_rounds(mlpbench_info(b)))}
    unknown = [g.text for g in gates if g.metric not in recorded]
    if unknown:
        raise GateError(f"--fail {', '.join(unknown)}: no saved run records "
                        f"{', '.join(dict.fromkeys(g.metric for g in gates if g.metric not in recorded))}; "
                        f"recorded figures: {', '.join(sorted(recorded))}")
    judged = judge(runs, store.where, gates, args)
    lines = series(runs, judged, gates)
    file_names(lines)
    directory = Path(args.output) / FOLDER
    try:
        directory.mkdir(parents=True, exist_ok=True)
        plotted = [plot(line, runs, directory) for line in lines]
        kept = {line.file for line in lines}
        for stale in directory.glob("*.png"):
            if stale.name not in kept:
                stale.unlink()
        path = directory / "history.md"
        write_atomic(path, markdown(runs, judged, lines, gates, args, store.where))
    except OSError as exc:
        raise GateError(f"cannot write the history into {directory}: {exc}") from None
    return Written(path, runs, judged, plotted)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mlpbench history",
        description="Trend plots of every figure of every benchmark across the runs saved in pytest-benchmark's "
                    "storage, each saved run marked with the gates' verdict against the run(s) before it, as "
                    "'mlpbench compare RUN' gives it: OUT/history/BENCHMARK--FIGURE.png and OUT/history/history.md.",
        epilog="Exit status: 0; 1 when the latest saved run fails a --fail gate (as 'mlpbench compare' does); "
               "2 on a usage error (bad gate, no saved runs, matplotlib or scipy missing).",
    )
    add_options(parser)
    parser.add_argument("-o", "--output", type=Path, default=Path("results"),
                        help=f"results directory: the plots and history.md go into its {FOLDER}/ folder, which "
                             "this command owns (default: results)")
    args = parser.parse_args(argv)
    try:
        written = write_history(args)
    except GateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for run, verdicts in zip(written.runs, written.verdicts):
        print(f"{run.label}: {run_verdict(verdicts)}")
    for v in written.latest_failed:
        print(f"FAILED gate {v.gate.text}: {v.message()}")
    print(f"wrote {written.markdown} and {len(written.plots)} plots")
    return 1 if written.latest_failed else 0
