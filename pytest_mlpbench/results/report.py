"""The comparison report: ``report.md`` and PNG plots, architecture by architecture,
and ``report.html``, the same as one self-contained page (:mod:`pytest_mlpbench.results.html`).

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
from pytest_mlpbench.results.atomic import write_atomic

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


def workload_rows(by_label: dict[str, list[dict]]) -> tuple[list[str], list[list[str]]]:
    """The time and resource medians of a workload: the header, and one row of cells per architecture."""
    floors = {runs[0]["source"]: runs for runs in by_label.values() if runs[0]["architecture"] == FLOOR}
    rows = []
    for name, runs in by_label.items():
        row = _row(runs, floors.get(runs[0]["source"]))
        failed = sum(r["outcome"] != "passed" for r in runs)
        rows.append([name, *(_cell(row[key], fmt) for key, _, fmt in COLUMNS), str(len(runs)), str(failed)])
    return ["architecture", *(title for _, title, _ in COLUMNS), "runs", "failed"], rows


def metric_rows(by_label: dict[str, list[dict]]) -> tuple[list[str], list[list[str]]]:
    """The workload's own figures (scores...), medians: the header and rows; both empty when it recorded none."""
    metrics = sorted({m for runs in by_label.values() for r in runs for m in r["metrics"]})
    if not metrics:
        return [], []
    return ["architecture", *metrics], [[name, *(_cell(median_of(runs, m), "{:.4g}") for m in metrics)]
                                        for name, runs in by_label.items()]


def workload_tables(by_label: dict[str, list[dict]]) -> list[str]:
    """The time and resource medians per architecture, then the workload's own figures (scores...)."""
    lines = _table(*workload_rows(by_label))
    header, rows = metric_rows(by_label)
    if header:
        lines += ["", f"{METRICS_TITLE}:", ""] + _table(header, rows)
    return lines


INTRO = ("Medians over the measured rounds that passed. *overhead* = wall - compute, where compute is the "
         "critical path through the steps' own spans; *startup* = submit to the first step's start "
         "(part of the overhead); *over inprocess* = overhead beyond the in-process floor's.")
METRICS_TITLE = "The workload's own figures (medians)"
COST_MODEL_TITLE = "Cost model (scaling sweep)"
COST_MODEL_INTRO = (
    f"Least squares over the runs that passed, each value with its {costmodel.CONFIDENCE:.0%} confidence "
    "interval: *fixed* and *per task* from the overhead of chains of N tasks, *per parallel task* from "
    "fan-outs of W light tasks, *per GiB* from hand-offs of S bytes between two steps through a shared "
    "directory, *per GiB native* through the framework's own data layer. *Side by side*: "
    "the widest fan-out of CPU-bound tasks whose tasks' makespan (compute + serial) stayed within "
    f"{costmodel.SIDE_BY_SIDE - 1:.0%} of one task's.")


def cost_model(runs: Sequence[dict]) -> tuple[dict, dict] | None:
    """The fitted model and the side-by-side widths of the scaling sweep's runs; ``None`` when none ran."""
    model, widths = costmodel.fit(runs), costmodel.side_by_side(runs)
    return (model, widths) if model or widths else None


def cost_model_section(runs: Sequence[dict], images: list[str], found: tuple[dict, dict] | None = None) -> list[str]:
    """The Markdown of the cost model (``found``: :func:`cost_model`'s answer, when it is known already)."""
    found = found or cost_model(runs)
    if found is None:
        return []
    lines = [f"## {COST_MODEL_TITLE}", "", COST_MODEL_INTRO, ""]
    return lines + costmodel.table(*found) + [""] + [f"![scaling]({name})" for name in images] + [""]


def markdown(grouped: dict[str, dict[str, list[dict]]], sources: Sequence[str], images: dict[str, list[str]],
             note: str | None, cost_model: Sequence[str] = ()) -> str:
    lines = ["# mlpbench comparison report", ""]
    if sources:
        lines += [f"Sources: {', '.join(f'`{s}`' for s in sources)}.", ""]
    lines += [INTRO, ""]
    if note:
        lines += [f"> {note}", ""]
    lines += cost_model
    for workload, by_label in grouped.items():
        scales = _scales(by_label)
        lines += [f"## {workload}" + (f" ({', '.join(scales)} scale)" if scales else ""), ""]
        lines += workload_tables(by_label) + [""]
        lines += [f"![{workload}: {name}]({name})" for name in images.get(workload, [])]
        failed = _failed(by_label)
        if failed:
            lines += ["", "Failed runs: " + ", ".join(f"`{r['run_id']}` ({r['outcome']})" for r in failed)]
        lines.append("")
    return "\n".join(lines)


def _scales(by_label: dict[str, list[dict]]) -> list[str]:
    return sorted({r["scale"] for runs in by_label.values() for r in runs if r.get("scale")})


def _failed(by_label: dict[str, list[dict]]) -> list[dict]:
    return [r for runs in by_label.values() for r in runs if r["outcome"] != "passed"]


def html_content(grouped: dict[str, dict[str, list[dict]]], sources: Sequence[str], images: dict[str, list[str]],
                 note: str | None, cost: tuple[dict, dict] | None, scaling: Sequence[str]):
    """What ``report.html`` shows: the Markdown report's tables, rows and plots, for :mod:`.html` to render."""
    from pytest_mlpbench.results import html

    workloads = [html.Workload(workload, _scales(by_label),
                               [("medians per architecture", *workload_rows(by_label)),
                                (METRICS_TITLE, *metric_rows(by_label))],
                               images.get(workload, []), [(r["run_id"], r["outcome"]) for r in _failed(by_label)])
                 for workload, by_label in grouped.items()]
    model = None if cost is None else html.CostModel(COST_MODEL_TITLE, COST_MODEL_INTRO, *costmodel.rows(*cost),
                                                       list(scaling))
    return html.Report(INTRO, note, list(sources), workloads, model)


def write_report(runs: Sequence[dict], out_dir: Path, html: bool = False) -> Path | None:
    """Write ``report.md`` and its plots into ``out_dir``, and ``report.html`` (the same, self-contained)
    with ``html``; nothing when no run was measured. Returns the path of ``report.md``."""
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
    cost = cost_model(runs)
    path = out_dir / "report.md"
    write_atomic(path, markdown(grouped, sources, images, note, cost_model_section(runs, scaling, cost)))
    if html:
        from pytest_mlpbench.results.html import write

        write(out_dir, html_content(grouped, sources, images, note, cost, scaling))
    return path


def write_session_report(records: Sequence, out_dir: Path) -> Path | None:
    """The session-end report, ``report.md`` and ``report.html``, from this session's :class:`RunRecord` objects."""
    return write_report([run_from_record(r.to_dict()) for r in records], out_dir, html=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pytest_mlpbench report",
        description="Rebuild report.md (and, with --html, report.html) and its plots from saved results; several "
                    "files are shown side by side.",
    )
    parser.add_argument("files", nargs="+", type=Path, metavar="RESULTS_OR_BENCHMARK_JSON",
                        help="results/runs.jsonl (or its directory) or pytest-benchmark JSON (--benchmark-json, "
                             ".benchmarks/...)")
    parser.add_argument("-o", "--output", type=Path, default=Path("results"),
                        help="directory for report.md and the plots (default: results)")
    parser.add_argument("--html", action="store_true",
                        help="also write report.html: the same report as one self-contained page (plots embedded, "
                             "tables sortable, the gates' verdicts and history plots found in the output directory)")
    args = parser.parse_args(argv)
    try:
        runs = [run for path in args.files for run in load(path)]
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    path = write_report(runs, args.output, html=args.html)
    if path is None:
        print("error: no measured mlpbench runs in " + ", ".join(map(str, args.files)), file=sys.stderr)
        return 1
    print(f"wrote {path}")
    if args.html:
        print(f"wrote {path.with_name('report.html')}")
    return 0
