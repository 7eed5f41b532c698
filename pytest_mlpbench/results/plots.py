"""The report's PNG plots (matplotlib, Agg backend: no display needed).

Per workload: where the wall time goes (startup, compute, other overhead),
CPU seconds and peak memory, and a timeline of the steps of one run per
architecture. For a scaling sweep: overhead against size, log-log.
"""
from __future__ import annotations

import re
import statistics
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after the backend is chosen)

from pytest_mlpbench.results.figures import median_of, typical_run  # noqa: E402

COLOURS = {"startup": "#f4b183", "compute": "#4472c4", "overhead": "#ed7d31"}
DPI = 110


def plot_workload(workload: str, by_label: dict[str, list[dict]], out_dir: Path) -> list[str]:
    """Write the workload's plots into ``out_dir``; return their file names."""
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", workload)
    names = []
    for kind, draw in (("time", _time), ("resources", _resources), ("timeline", _timeline)):
        fig = draw(workload, by_label)
        if fig is None:
            continue
        name = f"{stem}-{kind}.png"
        fig.savefig(out_dir / name, dpi=DPI, bbox_inches="tight")
        plt.close(fig)
        names.append(name)
    return names


def _bar_height(n: int) -> float:
    return 1.4 + 0.55 * n


def _time(workload: str, by_label: dict[str, list[dict]]):
    labels = list(by_label)
    parts = {"startup": [], "compute": [], "overhead": []}
    walls = []
    for name in labels:
        wall = median_of(by_label[name], "wall_s") or 0.0
        startup = min(median_of(by_label[name], "startup_s") or 0.0, wall)
        compute = min(median_of(by_label[name], "compute_s") or 0.0, wall - startup)
        parts["startup"].append(startup)
        parts["compute"].append(compute)
        parts["overhead"].append(wall - startup - compute)
        walls.append(wall)
    fig, ax = plt.subplots(figsize=(9, _bar_height(len(labels))))
    left = [0.0] * len(labels)
    titles = {"startup": "startup (overhead before the first step)", "compute": "compute (critical path of steps)",
              "overhead": "other overhead (gaps, serialised fan-out, teardown)"}
    for part, values in parts.items():
        ax.barh(labels, values, left=left, color=COLOURS[part], label=titles[part], height=0.6)
        left = [a + b for a, b in zip(left, values)]
    for y, wall in enumerate(walls):
        ax.text(wall, y, f" {wall:.2f} s", va="center", fontsize=9)
    ax.set_xlim(0, max(walls, default=1) * 1.18 or 1)
    ax.invert_yaxis()
    ax.set_xlabel("wall time, seconds (median over rounds)")
    ax.set_title(f"{workload}: wall time = startup + compute + other overhead")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.5 / _bar_height(len(labels)) - 0.12), ncol=3,
              fontsize=8, frameon=False)
    return fig


def _resources(workload: str, by_label: dict[str, list[dict]]):
    labels = list(by_label)
    cpu = [median_of(by_label[n], "cpu_s") or 0.0 for n in labels]
    mem = [(median_of(by_label[n], "peak_rss_bytes") or 0) / 2**20 for n in labels]
    fig, axes = plt.subplots(1, 2, figsize=(10, _bar_height(len(labels))), sharey=True)
    for ax, values, colour, xlabel, fmt in (
        (axes[0], cpu, "#70ad47", "CPU time, seconds (user + system, whole process tree)", "{:.2f} s"),
        (axes[1], mem, "#a5a5a5", "peak memory, MiB (resident, whole process tree)", "{:.0f} MiB"),
    ):
        ax.barh(labels, values, color=colour, height=0.6)
        for y, value in enumerate(values):
            ax.text(value, y, " " + fmt.format(value), va="center", fontsize=9)
        ax.set_xlim(0, max(values, default=1) * 1.3 or 1)
        ax.set_xlabel(xlabel, fontsize=9)
    axes[0].invert_yaxis()
    fig.suptitle(f"{workload}: resources per run (median over rounds)")
    fig.tight_layout()
    return fig


def _task_name(row: dict) -> str:
    return row["step"] if row.get("index") is None else f"{row['step']}[{row['index']}]"


def _timeline(workload: str, by_label: dict[str, list[dict]]):
    runs = {name: run for name, runs in by_label.items() if (run := typical_run(runs))}
    if not runs:
        return None
    steps = list(dict.fromkeys(row["step"] for run in runs.values() for row in run["steps"]))
    palette = plt.get_cmap("tab10")
    colour = {step: palette(i % 10) for i, step in enumerate(steps)}
    heights = [max(len(run["steps"]), 1) * 0.3 + 0.9 for run in runs.values()]
    fig, axes = plt.subplots(len(runs), 1, figsize=(10, sum(heights) + 0.6 * len(runs) + 0.8), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (name, run) in zip(axes[:, 0], runs.items()):
        first = {}
        for row in sorted(run["steps"], key=lambda r: r["start_s"]):
            first.setdefault(row["step"], row["start_s"])
        rows = sorted(run["steps"], key=lambda r: (first[r["step"]], r.get("index") or 0))  # fan-out tasks in order
        ax.barh(range(len(rows)), [r["duration_s"] for r in rows], left=[r["start_s"] for r in rows],
                color=[colour[r["step"]] for r in rows], height=0.7)
        ax.set_yticks(range(len(rows)), [_task_name(r) for r in rows], fontsize=8)
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.axvline(run["wall_s"], color="black", linestyle="--", linewidth=1)
        ax.set_xlim(0, run["wall_s"] * 1.02)
        ax.set_xlabel("seconds since submit", fontsize=8)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_title(f"{name}: wall {run['wall_s']:.2f} s, startup {run['startup_s'] or 0:.2f} s ({run['run_id']})",
                     fontsize=9, loc="left")
    handles = [plt.Rectangle((0, 0), 1, 1, color=colour[s]) for s in steps]
    fig.legend(handles, steps, loc="upper right", ncol=len(steps), fontsize=8, frameon=False)
    fig.suptitle(f"{workload}: steps of the median-wall run per architecture\n"
                 "(each on its own time axis, from the harness's submit; dashed line: run finished)",
                 x=0.02, ha="left", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.8 / fig.get_figheight()))  # room for the two-line title
    return fig



def plot_scaling(points: dict[tuple[str, str], list[tuple[int, float]]], out_dir: Path) -> list[str]:
    """The scaling sweep: median overhead against size, log-log, one line per architecture and family."""
    families = sorted({family for _, family in points})
    if not families:
        return []
    fig, axes = plt.subplots(1, len(families), figsize=(5 * len(families), 4), squeeze=False)
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {arch: cycle[i % len(cycle)] for i, arch in enumerate(sorted({arch for arch, _ in points}))}
    for ax, family in zip(axes[0], families):
        for (arch, fam), xy in sorted(points.items()):
            if fam != family:
                continue
            sizes = sorted({size for size, _ in xy})
            medians = [statistics.median(o for s, o in xy if s == size) for size in sizes]
            ax.plot(sizes, [max(m, 1e-4) for m in medians], marker="o", label=arch, color=colours[arch])
        ax.set(xscale="log", yscale="log", title=family, xlabel=SIZE_LABELS.get(family, "size"),
               ylabel="overhead (s, median)")
        ax.legend(fontsize="small")
    name = "scaling.png"
    fig.savefig(out_dir / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return [name]


SIZE_LABELS = {"chain": "tasks in a chain", "fanout": "tasks side by side", "handoff": "bytes handed on (shared)",
               "handoff-native": "bytes handed on (data layer)"}
