"""``report.html``: the comparison report as one self-contained page.

The same figures as ``report.md`` (:mod:`.report` builds the rows of both:
:func:`.report.html_content`), with every PNG embedded as a ``data:`` URI, a sortable table per
workload, the cost model where the scaling sweep ran, the gates' verdicts
(``gates.json``, written by the gates when they ran) and the trend plots of
``history/``, both found in the directory the report is written to. The page
loads nothing: no stylesheet, script, font or image from anywhere, and its
Content-Security-Policy forbids it to, so it can be mailed, attached to a CI
run or opened offline. Its one script sorts a table when a column header is
clicked.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from html import escape
from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from pytest_mlpbench.results.atomic import write_atomic

PNG = b"\x89PNG\r\n\x1a\n"
GATES_FILE = "gates.json"
HISTORY_DIR = "history"

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 90rem;
       padding: 1rem 1.5rem 3rem; color: #1b1b1b; background: #fff; line-height: 1.45; }
h1 { margin-bottom: 0.2rem; }
h2 { margin-top: 2.2rem; border-bottom: 1px solid #ccc; padding-bottom: 0.2rem; }
code { font-size: 0.92em; background: #f2f2f2; padding: 0 0.2em; border-radius: 3px; }
.meta { color: #555; margin-top: 0; }
.note { background: #fff6d6; border-left: 4px solid #e0b000; padding: 0.5rem 0.8rem; }
nav ul { list-style: none; padding: 0; display: flex; flex-wrap: wrap; gap: 0.4rem 1.2rem; }
.scroll { overflow-x: auto; margin: 0.8rem 0 1.2rem; }
table { border-collapse: collapse; font-size: 0.92rem; }
th, td { border: 1px solid #d0d0d0; padding: 0.25rem 0.6rem; text-align: left; vertical-align: top; }
thead th { background: #eef1f5; white-space: nowrap; }
tbody tr:nth-child(even) { background: #f8f8f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th button { font: inherit; font-weight: bold; border: 0; background: none; padding: 0; color: inherit; }
.js th button { cursor: pointer; }
.js th button::after { content: " \\2195"; color: #999; }
.js th[aria-sort="ascending"] button::after { content: " \\25B2"; color: #333; }
.js th[aria-sort="descending"] button::after { content: " \\25BC"; color: #333; }
tr.fail, tr.fail td, tr.fail th { background: #fde2e2; }
.status-FAIL { color: #b00020; font-weight: bold; }
.failures li { color: #b00020; }
figure { margin: 1rem 0 1.8rem; }
figure img { max-width: 100%; height: auto; border: 1px solid #e4e4e4; }
figcaption { color: #555; font-size: 0.9rem; }
"""

SCRIPT = """
(function () {
  "use strict";
  function key(cell) {
    var text = cell.textContent.trim();
    return {missing: text === "" || text === "-", text: text.toLowerCase(),
            number: /^[-+]?(\\d|\\.\\d)/.test(text) ? parseFloat(text) : NaN};
  }
  function compare(a, b) {
    if (!isNaN(a.number) && !isNaN(b.number)) { return a.number - b.number; }
    if (isNaN(a.number) !== isNaN(b.number)) { return isNaN(a.number) ? 1 : -1; }
    return a.text < b.text ? -1 : a.text > b.text ? 1 : 0;
  }
  function sort(table, th) {
    var column = th.cellIndex, body = table.tBodies[0];
    var descending = th.getAttribute("aria-sort") === "ascending";
    var headers = table.tHead.rows[0].cells;
    for (var i = 0; i < headers.length; i++) { headers[i].removeAttribute("aria-sort"); }
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (r1, r2) {
      var a = key(r1.cells[column]), b = key(r2.cells[column]);
      if (a.missing || b.missing) { return a.missing - b.missing; }  /* no value: last either way */
      return descending ? compare(b, a) : compare(a, b);
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }
  document.documentElement.classList.add("js");
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th) {
      th.querySelector("button").addEventListener("click", function () { sort(table, th); });
    });
  });
}());
"""


def _hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


#: Nothing may be fetched: images only from data: URIs, the page's own style and script only.
POLICY = (f"default-src 'none'; img-src data:; style-src {_hash(STYLE)}; script-src {_hash(SCRIPT)}; "
          "base-uri 'none'; form-action 'none'")

CAPTIONS = {
    "time": "wall time per architecture, split into startup, compute and other overhead (medians)",
    "resources": "CPU seconds and peak memory per architecture (medians)",
    "timeline": "each architecture's steps in its median-wall run, on a time axis from submit",
}


class Workload(NamedTuple):
    """A workload's part of the report, as :mod:`report` builds it for the Markdown too."""
    name: str
    scales: Sequence[str]
    #: (title, header, rows): the medians first, then the workload's own figures (an empty header: none)
    tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence[str]]]]
    images: Sequence[str]  # PNG file names in the report's directory
    failed: Sequence[tuple[str, str]]  # (run id, outcome) of the runs that did not pass


class CostModel(NamedTuple):
    title: str
    intro: str  # a sentence of Markdown: *emphasis* and `code` are kept
    header: Sequence[str]
    rows: Sequence[Sequence[str]]
    images: Sequence[str]


class Report(NamedTuple):
    intro: str
    note: str | None  # why there are no plots, where there are none
    sources: Sequence[str]
    workloads: Sequence[Workload]
    cost: CostModel | None


def write(out_dir: Path, content: Report) -> Path:
    """Write ``report.html`` into ``out_dir`` in one step (a temporary file, then a rename)."""
    path = out_dir / "report.html"
    write_atomic(path, page(out_dir, content))
    return path


def page(out_dir: Path, content: Report) -> str:
    """The whole page: header, gates, cost model, one section per workload, history."""
    sections = [gates_section(out_dir), cost_model_section(content.cost, out_dir)]
    sections += [workload_section(f"w{i}-{_slug(w.name)}", w, out_dir) for i, w in enumerate(content.workloads)]
    sections.append(history_section(out_dir))
    sections = [s for s in sections if s]
    written = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    sources = ", ".join(_code(s) for s in content.sources)
    meta = f"Written {escape(written)}" + (f"; sources: {sources}" if sources else "")
    body = [
        "<header>", "<h1>mlpbench comparison report</h1>", f'<p class="meta">{meta}.</p>', _nav(sections),
        "</header>", "<main>", f"<p>{_text(content.intro)}</p>",
        *([f'<p class="note">{escape(content.note)}</p>'] if content.note else []), *sections, "</main>",
    ]
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="Content-Security-Policy" content="{escape(POLICY)}">',
        '<link rel="icon" href="data:,">', "<title>mlpbench comparison report</title>",
        f"<style>{STYLE}</style>", "</head>", "<body>", *body, f"<script>{SCRIPT}</script>", "</body>", "</html>", "",
    ])


def _nav(sections: Sequence[str]) -> str:
    """Links to the sections, from their ``<section id=...>`` and first heading."""
    found = re.findall(r'<section id="([^"]+)">\n<h2>(.*?)</h2>', "\n".join(sections))
    items = "".join(f'<li><a href="#{ident}">{title}</a></li>' for ident, title in found)
    return f'<nav aria-label="sections"><ul>{items}</ul></nav>'


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name)


def _code(value) -> str:
    return f"<code>{escape(str(value))}</code>"


def _text(markdown: str) -> str:
    """A sentence of the Markdown report, escaped, its ``*emphasis*`` and ``backticks`` kept."""
    out = escape(markdown)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", out)


def table(header: Sequence[str], rows: Iterable[Sequence], row_classes: Sequence[str] = (),
          label: str = "") -> str:
    """A sortable table (scrolled sideways where it is wider than the page): the first column names
    the row. A cell is its text, or (text, CSS class); a cell that reads as a number is right-aligned."""
    head = "".join(f'<th scope="col"><button type="button">{escape(str(h))}</button></th>' for h in header)
    lines = ['<div class="scroll">', f"<table{_attrs(('class', 'sortable'), ('aria-label', label))}>",
             f"<thead><tr>{head}</tr></thead>", "<tbody>"]
    for i, row in enumerate(rows):
        cells = [f'<th scope="row">{escape(str(row[0]))}</th>', *(_td(cell) for cell in row[1:])]
        lines.append(f"<tr{_attrs(('class', row_classes[i] if i < len(row_classes) else ''))}>{''.join(cells)}</tr>")
    return "\n".join(lines + ["</tbody>", "</table>", "</div>"])


def _td(cell) -> str:
    text, cls = cell if isinstance(cell, tuple) else (cell, "")
    text = str(text)
    numeric = re.match(r"^[-+]?(\d|\.\d)", text) or text == "-"
    return f"<td{_attrs(('class', ' '.join(filter(None, ['num' if numeric else '', cls]))))}>{escape(text)}</td>"


def _attrs(*pairs: tuple[str, str]) -> str:
    """HTML attributes, quoted and escaped; those with an empty value left out."""
    return "".join(f' {name}="{escape(value, quote=True)}"' for name, value in pairs if value)


def data_uri(path: Path) -> str | None:
    """A PNG file as a ``data:`` URI; ``None`` when it cannot be read or is not a PNG."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii") if data.startswith(PNG) else None


def figure(path: Path, caption: str) -> str:
    """The image embedded, with its caption; a note in its place where the file is missing or not a PNG."""
    uri = data_uri(path)
    if uri is None:
        return f'<p class="note">{_code(path.name)} could not be embedded: missing, unreadable or not a PNG.</p>'
    return (f'<figure><img src="{uri}"{_attrs(("alt", caption))}>'
            f"<figcaption>{_code(path.name)}: {escape(caption)}</figcaption></figure>")


def _caption(workload: str, name: str) -> str:
    kind = name.rpartition("-")[2].removesuffix(".png")
    return f"{workload}: {CAPTIONS.get(kind, name)}"


def workload_section(ident: str, workload: Workload, out_dir: Path) -> str:
    """A workload: its tables (the first without a heading of its own), its plots (the timeline among
    them) and the runs that did not pass."""
    title = escape(workload.name) + (f" ({escape(', '.join(workload.scales))} scale)" if workload.scales else "")
    parts = [f'<section id="{ident}">', f"<h2>{title}</h2>"]
    for i, (heading, header, rows) in enumerate(workload.tables):
        if header:
            parts += [f"<h3>{escape(heading)}</h3>"] if i else []
            parts.append(table(header, rows, label=f"{workload.name}: {heading}"))
    parts += [figure(out_dir / name, _caption(workload.name, name)) for name in workload.images]
    if workload.failed:
        parts.append("<p>Failed runs: " + ", ".join(f"{_code(run_id)} ({escape(str(outcome))})"
                                                    for run_id, outcome in workload.failed) + "</p>")
    return "\n".join(parts + ["</section>"])


def cost_model_section(cost: CostModel | None, out_dir: Path) -> str:
    """The cost model as a table, and ``scaling.png``; nothing where no scaling sweep ran."""
    if cost is None:
        return ""
    return "\n".join([
        '<section id="cost-model">', f"<h2>{escape(cost.title)}</h2>", f"<p>{_text(cost.intro)}</p>",
        table(cost.header, cost.rows, label="cost model per architecture"),
        *(figure(out_dir / name, "overhead against size, log-log, per architecture") for name in cost.images),
        "</section>",
    ])


GATE_COLUMNS = ["benchmark", "gate", "baseline", "now", "change", "p-value", "verdict"]


def gates_section(out_dir: Path) -> str:
    """The verdicts of ``gates.json`` (the last session that evaluated gates here); nothing without it."""
    path = out_dir / GATES_FILE
    if not path.is_file():
        return ""
    parts = ['<section id="gates">', "<h2>Gates</h2>"]
    verdicts, written = read_verdicts(path)
    if isinstance(verdicts, str):
        parts.append(f'<p class="note">{_code(GATES_FILE)} cannot be read: {escape(verdicts)}</p>')
        return "\n".join(parts + ["</section>"])
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[str(v.get("status"))] = counts.get(str(v.get("status")), 0) + 1
    summary = ", ".join(f"{n} {'new (passes)' if status == 'new' else status}" for status, n in counts.items())
    parts.append(f"<p>The verdicts of the last session that evaluated gates here ({_code(GATES_FILE)}, written "
                 f"{escape(written)}): {len(verdicts)} gated figure{'' if len(verdicts) == 1 else 's'}"
                 f"{': ' + escape(summary) if summary else ''}.</p>")
    if verdicts:
        parts.append(table(GATE_COLUMNS, [_gate_row(v) for v in verdicts],
                           ["fail" if v.get("status") == "FAIL" else "" for v in verdicts],
                           label="gates: one verdict per benchmark and gate"))
    failed = [f"{v.get('gate')} failed: {v.get('message') or ''}" for v in verdicts if v.get("status") == "FAIL"]
    notes = dict.fromkeys(str(v[k]) for v in verdicts for k in ("note", "remark") if v.get(k))
    parts += [_list(failed, "failures"), _list(notes)]
    return "\n".join([p for p in parts if p] + ["</section>"])


def read_verdicts(path: Path) -> tuple[list[dict] | str, str]:
    """The verdicts of a ``gates.json`` and when it was written; the reason instead, where it cannot be read."""
    try:
        verdicts = json.loads(path.read_text(encoding="utf-8"))
        written = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(path.stat().st_mtime))
    except (OSError, ValueError) as exc:
        return str(exc), ""
    if not isinstance(verdicts, list) or not all(isinstance(v, dict) for v in verdicts):
        return "not a list of verdicts", written
    return verdicts, written


def _list(items: Iterable[str], cls: str = "") -> str:
    items = [f"<li>{escape(str(item))}</li>" for item in items]
    return f"<ul{_attrs(('class', cls))}>{''.join(items)}</ul>" if items else ""


def _gate_row(verdict: dict) -> list[str]:
    metric = str(verdict.get("metric") or "")
    p = verdict.get("p_value")
    status = str(verdict.get("status"))
    return [str(verdict.get("benchmark")), str(verdict.get("gate")), _value(metric, verdict.get("baseline")),
            _value(metric, verdict.get("now")), str(verdict.get("change") or ""),
            f"{p:.3g}" if isinstance(p, (int, float)) else "",
            ("FAIL", "status-FAIL") if status == "FAIL" else "new (passes)" if status == "new" else status]


def _value(metric: str, value) -> str:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "-" if value is None else str(value)
    from pytest_mlpbench.gates.verdict import fmt

    return fmt(metric, value)


def history_section(out_dir: Path) -> str:
    """Every PNG of ``history/`` (the trend plots of ``mlpbench history``); nothing without that folder."""
    folder = out_dir / HISTORY_DIR
    if not folder.is_dir():
        return ""
    parts = ['<section id="history">', "<h2>History</h2>"]
    try:
        pngs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    except OSError as exc:
        pngs = []
        parts.append(f'<p class="note">{_code(HISTORY_DIR + "/")} cannot be read: {escape(str(exc))}</p>')
    else:
        if not pngs:
            parts.append(f"<p>No trend plots in {_code(HISTORY_DIR + '/')} yet.</p>")
    parts += [figure(p, f"trend plot {p.stem}") for p in pngs]
    return "\n".join(parts + ["</section>"])
