"""The comparison report: ``report.md`` and PNG plots, architecture by architecture.

Written at session end from the session's records, or rebuilt from saved
files by ``python -m pytest_mlpbench report FILE...``: ``runs.jsonl`` files
(or results directories holding one) and pytest-benchmark JSON files, whose
``benchmarks[].extra_info["mlpbench"]["rounds"]`` hold the runs. Given more
than one file, each file's runs are labelled with its name and shown side by
side.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Iterable, Sequence

from pytest_mlpbench.measure.record import FIGURES, OPTIONAL_FIGURES
from pytest_mlpbench.results import costmodel
from pytest_mlpbench.results.figures import median_of, parallel_overhead

FLOOR = "inprocess"
ROUND_KEYS = {"run_id", "outcome", "memory_method", "gaps", "steps"}


class ReportError(Exception):
    """A saved file cannot be read as results; the message says which and why."""


def run_from_record(record: dict, source: str = "") -> dict:
    """A run in the report's shape, from a run record (``RunRecord.to_dict()`` or a ``runs.jsonl`` line)."""
    run = {k: record.get(k) for k in ("run_id", "architecture", "workload", "scale", "outcome", *FIGURES,
                                      *OPTIONAL_FIGURES)}
    run.update(source=source, warmup=bool(record.get("warmup")), handoff=record.get("handoff") or "shared", metrics=dict(record.get("metrics") or {}),
               steps=list(record.get("steps") or []))
    return run


def runs_from_benchmark_json(data: dict, source: str) -> list[dict]:
    runs = []
    for bench in data.get("benchmarks", []):
        info = (bench.get("extra_info") or {}).get("mlpbench")
        if not info:
            continue
        for rnd in info.get("rounds", []):
            figures = set(info.get("figures") or FIGURES) | set(OPTIONAL_FIGURES)
            record = {**{k: v for k, v in rnd.items() if k in figures or k in ROUND_KEYS},
                      "metrics": {k: v for k, v in rnd.items() if k not in figures and k not in ROUND_KEYS},
                      "architecture": info["architecture"], "workload": info["workload"], "scale": info.get("scale"),
                      "handoff": info.get("handoff")}
            runs.append(run_from_record(record, source))
    return runs


def load(path: Path) -> list[dict]:
    """The runs saved in ``path``: a ``runs.jsonl``, a results directory, or a pytest-benchmark JSON file."""
    if path.is_dir():
        path = path / "runs.jsonl"
    source = path.parent.name if path.name == "runs.jsonl" else path.stem
    try:
        text = path.read_text()
    except OSError as exc:
        raise ReportError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if path.suffix == ".jsonl":
        return [run_from_record(record, source) for record in _json_lines(text)]
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not mlpbench results: {exc}") from None
    if not isinstance(data, dict) or "benchmarks" not in data:
        raise ReportError(f"{path}: not a pytest-benchmark JSON file (no 'benchmarks' list)")
    return runs_from_benchmark_json(data, source)


def _json_lines(text: str) -> Iterable[dict]:
    """The records of a ``runs.jsonl``; a torn line (a killed writer) is skipped."""
    for line in text.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "architecture" in record:
            yield record


def label(run: dict, sources: Sequence[str]) -> str:
    """An architecture's name, with the file it came from when several are compared."""
    return run["architecture"] if len(sources) < 2 else f"{run['architecture']} ({run['source']})"


def groups(runs: Iterable[dict]) -> dict[str, dict[str, list[dict]]]:
    """workload -> bar label -> measured runs; the floors first, then in order of appearance."""
    runs = [r for r in runs if not r["warmup"]]
    sources = list(dict.fromkeys(r["source"] for r in runs))
    order = {a: i for i, a in enumerate(dict.fromkeys([FLOOR, "subprocess", *(r["architecture"] for r in runs)]))}
    out: dict[str, dict[str, list[dict]]] = {}
    for run in sorted(runs, key=lambda r: order[r["architecture"]]):  # stable: sources stay in argument order
        out.setdefault(run["workload"], {}).setdefault(label(run, sources), []).append(run)
    return out


COLUMNS = [
    ("wall_s", "wall (s)", "{:.3f}"),
    ("startup_s", "startup (s)", "{:.3f}"),
    ("compute_s", "compute (s)", "{:.3f}"),
    ("overhead_s", "overhead (s)", "{:.3f}"),
    ("serial_s", "serial (s)", "{:.3f}"),
    ("over_floor_s", "over inprocess (s)", "{:+.3f}"),
    ("cpu_s", "CPU (s)", "{:.2f}"),
    ("peak_mib", "peak mem (MiB)", "{:.0f}"),
]


def _row(runs: Sequence[dict], floor: Sequence[dict] | None) -> dict:
    row = {key: median_of(runs, key) for key, _, _ in COLUMNS}
    peak = median_of(runs, "peak_rss_bytes")
    row["peak_mib"] = None if peak is None else peak / 2**20
    if row["overhead_s"] is not None and floor and median_of(floor, "overhead_s") is not None:
        floor_row = {key: median_of(floor, key) for key in ("overhead_s", "serial_s")}
        row["over_floor_s"] = parallel_overhead(row) - parallel_overhead(floor_row)
    return row


def _table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers), *("| " + " | ".join(r) + " |" for r in rows)]


def _cell(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def workload_tables(by_label: dict[str, list[dict]]) -> list[str]:
    """The time and resource medians per architecture, then the workload's own figures (scores...)."""
    floors = {runs[0]["source"]: runs for runs in by_label.values() if runs[0]["architecture"] == FLOOR}
    rows = []
    for name, runs in by_label.items():
        row = _row(runs, floors.get(runs[0]["source"]))
        failed = sum(r["outcome"] != "passed" for r in runs)
        rows.append([name, *(_cell(row[key], fmt) for key, _, fmt in COLUMNS), str(len(runs)), str(failed)])
    lines = _table(["architecture", *(title for _, title, _ in COLUMNS), "runs", "failed"], rows)
    metrics = sorted({m for runs in by_label.values() for r in runs for m in r["metrics"]})
    if metrics:
        lines += ["", "The workload's own figures (medians):", ""]
        lines += _table(["architecture", *metrics],
                        ([name, *(_cell(median_of(runs, m), "{:.4g}") for m in metrics)] for name, runs in by_label.items()))
    return lines


def cost_model_section(runs: Sequence[dict], images: list[str]) -> list[str]:
    model, widths = costmodel.fit(runs), costmodel.side_by_side(runs)
    if not model and not widths:
        return []
    lines = ["## Cost model (scaling sweep)", "",
             f"Least squares over the runs that passed, each value with its {costmodel.CONFIDENCE:.0%} confidence "
             "interval: *fixed* and *per task* from the overhead of chains of N tasks, *per parallel task* from "
             "fan-outs of W light tasks, *per GiB* from hand-offs of S bytes between two steps through a shared "
             "directory, *per GiB native* through the framework's own data layer. *Side by side*: "
             "the widest fan-out of CPU-bound tasks whose makespan stayed within "
             f"{costmodel.SIDE_BY_SIDE - 1:.0%} of one task's.", ""]
    return lines + costmodel.table(model, widths) + [""] + [f"![scaling]({name})" for name in images] + [""]


def markdown(grouped: dict[str, dict[str, list[dict]]], sources: Sequence[str], images: dict[str, list[str]],
             note: str | None, cost_model: Sequence[str] = ()) -> str:
    lines = ["# mlpbench comparison report", ""]
    if sources:
        lines += [f"Sources: {', '.join(f'`{s}`' for s in sources)}.", ""]
    lines += ["Medians over the measured rounds that passed. *overhead* = wall - compute, where compute is the "
              "critical path through the steps' own spans; *startup* = submit to the first step's start "
              "(part of the overhead); *over inprocess* = overhead beyond the in-process floor's.", ""]
    if note:
        lines += [f"> {note}", ""]
    lines += cost_model
    for workload, by_label in grouped.items():
        scales = sorted({r["scale"] for runs in by_label.values() for r in runs if r.get("scale")})
        lines += [f"## {workload}" + (f" ({', '.join(scales)} scale)" if scales else ""), ""]
        lines += workload_tables(by_label) + [""]
        lines += [f"![{workload}: {name}]({name})" for name in images.get(workload, [])]
        failed = [r for runs in by_label.values() for r in runs if r["outcome"] != "passed"]
        if failed:
            lines += ["", "Failed runs: " + ", ".join(f"`{r['run_id']}` ({r['outcome']})" for r in failed)]
        lines.append("")
    return "\n".join(lines)


def write_report(runs: Sequence[dict], out_dir: Path) -> Path | None:
    """Write ``report.md`` and its plots into ``out_dir``; nothing when no run was measured."""
    grouped = groups(runs)
    if not grouped:
        return None
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = [s for s in dict.fromkeys(r["source"] for r in runs) if s]
    try:
        from pytest_mlpbench.results import plots
    except ImportError as exc:  # matplotlib is optional: the tables still say everything
        images, note = {}, f"No plots: {exc.name or 'matplotlib'} is not installed (pip install matplotlib)."
        scaling = []
    else:
        images = {w: plots.plot_workload(w, by_label, out_dir) for w, by_label in grouped.items()}
        scaling = plots.plot_scaling(costmodel.points(runs), out_dir)
        note = None
    path = out_dir / "report.md"
    tmp = path.with_name(".report.md.tmp")
    tmp.write_text(markdown(grouped, sources, images, note, cost_model_section(runs, scaling)))
    tmp.replace(path)
    return path


def write_session_report(records: Sequence, out_dir: Path) -> Path | None:
    """The session-end report, from this session's :class:`RunRecord` objects."""
    return write_report([run_from_record(r.to_dict()) for r in records], out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mlpbench report",
        description="Rebuild report.md and its plots from saved results; several files are shown side by side.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="RESULTS_OR_BENCHMARK_JSON",
                        help="results/runs.jsonl (or its directory) or pytest-benchmark JSON (--benchmark-json, "
                             ".benchmarks/...)")
    parser.add_argument("-o", "--output", type=Path, default=Path("results"),
                        help="directory for report.md and the plots (default: results)")
    args = parser.parse_args(argv)
    try:
        runs = [run for path in args.files for run in load(path)]
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = write_report(runs, args.output)
    if path is None:
        print("error: no measured mlpbench runs in " + ", ".join(map(str, args.files)), file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0
