"""report.html: the comparison report as one self-contained page, checked
from a real session's results, and loaded in a real headless browser
(Debian's ``chromium``) that must render its tables and images and fetch
nothing from any address."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from html.parser import HTMLParser
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import pytest
from conftest import REGISTER, TESTS, bench_source
from PIL import Image

from pytest_mlpbench.results import html, report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs a headless browser: Debian's chromium on PATH (apt-get install chromium)")

PROJECT = bench_source("linear") + '''

from workloads import scaling


@pytest.mark.parametrize("n", [1, 4, pytest.param(4, id="4-again")])  # three points for the fit, two workloads
def test_chain(mlpbench, n):
    mlpbench.run(scaling.chain(n))
'''
ARCHITECTURES = ["inprocess", "subprocess"]
WORKLOADS = ["linear", "chain-1", "chain-4"]
BENCHMARKS = 4 * len(ARCHITECTURES)
PLOTS = 3 * len(WORKLOADS) + 1  # time, resources and timeline per workload, and scaling.png
COMPUTE_BLUE = (0x44, 0x72, 0xC4)  # the compute part of the time plot's bars (plots.COLOURS)


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    """A real session's results directory: a fake workload and a small chain sweep on the
    cheap architectures, one round each, gated on overhead (no baseline yet: every verdict new)."""
    project = tmp_path_factory.mktemp("session")
    (project / "conftest.py").write_text(REGISTER)
    (project / "test_bench.py").write_text(PROJECT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"--mlpbench-arch={','.join(ARCHITECTURES)}",
         "--mlpbench-scale=smoke", "--mlpbench-warmup=0", "--mlpbench-rounds=1",
         "--mlpbench-fail=overhead_s:median:+50%"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return project / "results"


# -- reading pages -------------------------------------------------------------

#: Attributes whose value a browser fetches (or navigates to).
URL_ATTRIBUTES = {"src", "href", "srcset", "action", "formaction", "data", "poster", "background", "ping",
                  "manifest", "xlink:href", "codebase", "longdesc", "icon"}


class Page(HTMLParser):
    """What a page holds: its tables (by aria-label: header, rows of cell texts, the column
    it is sorted by), its images, the classes of its <html>, and every reference outside it."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tables: dict[str, dict] = {}
        self.images: list[dict] = []
        self.classes: list[str] = []
        self.external: list[str] = []
        self._table = self._row = self._cell = None
        self._head = self._css = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        found = dict(attrs)
        for name, value in attrs:
            if name in URL_ATTRIBUTES and value and not value.startswith(("data:", "#")):
                self.external.append(f"<{tag} {name}={value[:100]}>")
        if tag == "meta" and (found.get("http-equiv") or "").lower() == "refresh":
            self.external.append(f"<meta refresh {found.get('content')}>")
        self.external += [f"style= {url}" for url in css_urls(found.get("style") or "")]
        if tag == "html":
            self.classes = (found.get("class") or "").split()
        elif tag == "style":
            self._css = True
        elif tag == "img":
            self.images.append(found)
        elif tag == "table":
            self._table = self.tables.setdefault(found.get("aria-label") or f"#{len(self.tables)}",
                                                 {"header": [], "rows": [], "sorted": {}})
        elif tag == "thead":
            self._head = True
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("th", "td") and self._row is not None:
            self._cell = []
            if self._head and found.get("aria-sort"):
                self._table["sorted"][len(self._row)] = found["aria-sort"]

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._row is not None:
            if self._head:
                self._table["header"] = self._row
            else:
                self._table["rows"].append(self._row)
            self._row = None
        elif tag == "thead":
            self._head = False
        elif tag == "table":
            self._table = None
        elif tag == "style":
            self._css = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._css:
            self.external += [f"css {url}" for url in css_urls(data)]


def css_urls(css: str) -> list[str]:
    """What a stylesheet would fetch: ``url(...)`` other than data:, and ``@import``."""
    urls = re.findall(r"url\(\s*['\"]?([^'\")\s]+)", css)
    return [u for u in urls if not u.startswith("data:")] + re.findall(r"@import\s+([^;]+)", css)


def column(table: dict, name: str) -> list[str]:
    index = table["header"].index(name)
    return [row[index] for row in table["rows"]]


def number(cell: str) -> float:
    return float("inf") if cell == "-" else float(cell.split()[0])


def markdown_tables(text: str, heading: str) -> list[list[list[str]]]:
    """The tables of a ``## heading`` section of report.md, each as rows of cells (the header first)."""
    section = re.split(r"^## ", text, flags=re.M)
    body = next(s for s in section if s.startswith(heading + "\n") or s.startswith(heading + " ("))
    tables, current = [], []
    for line in body.splitlines() + [""]:
        if line.startswith("|---"):
            continue
        if line.startswith("| "):
            current.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif current:
            tables.append(current)
            current = []
    return tables


# -- the browser ---------------------------------------------------------------


class Proxy:
    """An HTTP proxy on 127.0.0.1 that forwards nothing and records the first line of every
    connection made to it: a browser told to use it shows here every request it makes."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.1)
        self.port = self.server.getsockname()[1]
        self.requests: list[str] = []
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    first = conn.recv(4096).split(b"\r\n", 1)[0].decode(errors="replace")
                except OSError:
                    first = ""
                self.requests.append(first or "(a connection that sent nothing)")
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    def close(self):
        self.stopped.set()
        self.thread.join(5)
        self.server.close()


@pytest.fixture
def proxy():
    recorder = Proxy()
    yield recorder
    recorder.close()


class Visit(NamedTuple):
    """What loading a page in chromium did."""
    stdout: str
    #: the URLs the page itself asked for (the net log's requests with an initiator), other than file: and data:
    page_requests: list[str]
    #: what reached the proxy that the browser did not ask for on its own behalf (its updater, network
    #: time, account list: requests the net log shows without an initiator, which no switch turns off)
    unexplained: list[str]


def chromium(page: Path, work: Path, proxy: Proxy, *args: str) -> Visit:
    """Load ``page`` in headless chromium (a profile of its own, every request through ``proxy``,
    loopback included, and recorded in a net log) with ``args`` (``--dump-dom``, ``--screenshot=...``).
    Everything it started is killed afterwards, also on a timeout."""
    work.mkdir(parents=True, exist_ok=True)
    out, err, log = work / "stdout", work / "stderr", work / "netlog.json"
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        f"--user-data-dir={work / 'profile'}", "--no-first-run", "--no-default-browser-check",
        "--disable-extensions", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--disable-default-apps", "--disable-breakpad", "--hide-scrollbars", "--mute-audio",
        f"--proxy-server=http://127.0.0.1:{proxy.port}", "--proxy-bypass-list=<-loopback>", f"--log-net-log={log}",
        *args, page.as_uri(),
    ]
    with out.open("wb") as stdout, err.open("wb") as stderr:  # files, not pipes: a helper it leaves may hold them
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL,
                                   start_new_session=True)
    try:
        code = process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        code = None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its whole process group: renderers, zygote, crash handler
        process.wait()
    assert code == 0, f"chromium {'timed out' if code is None else f'exited {code}'}: {err.read_text()[-3000:]}"
    requests = url_requests(json.loads(log.read_text()))
    own = {urlsplit(url).hostname for initiator, url in requests if initiator == "not an origin"}
    return Visit(out.read_text(),
                 [url for initiator, url in requests if initiator != "not an origin"
                  and not url.startswith(("file:", "data:"))],
                 [line for line in proxy.requests if proxied_host(line) not in own])


def url_requests(netlog: dict) -> list[tuple[str, str]]:
    """(initiator, URL) of every request a chromium net log started."""
    start = netlog["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
    return [(e["params"].get("initiator", ""), e["params"]["url"]) for e in netlog["events"]
            if e["type"] == start and "url" in e.get("params", {})]


def proxied_host(line: str) -> str | None:
    """The host of a request line a proxy received: ``CONNECT host:443 ...`` or ``GET http://host/... ...``."""
    method, _, rest = line.partition(" ")
    target = rest.split(" ", 1)[0]
    return urlsplit(f"//{target}" if method == "CONNECT" else target).hostname


# -- the session's page ----------------------------------------------------------


def test_the_session_writes_report_html_with_the_markdown_reports_figures(results):
    text = (results / "report.html").read_text()
    markdown = (results / "report.md").read_text()
    assert not list(results.glob(".report.*.tmp")) and not list(results.glob(".gates.json.*"))
    page = Page(text)
    assert page.external == []

    # the same figures as report.md, table by table, per workload and in the cost model
    for workload in WORKLOADS:
        medians = markdown_tables(markdown, workload)[0]
        table = page.tables[f"{workload}: medians per architecture"]
        assert [table["header"], *table["rows"]] == medians
        assert column(table, "architecture") == ARCHITECTURES
    [own] = markdown_tables(markdown, "linear")[1:]
    metrics = page.tables["linear: The workload's own figures (medians)"]
    assert [metrics["header"], *metrics["rows"]] == own and own[0] == ["architecture", "value"]
    [cost] = markdown_tables(markdown, "Cost model")
    model = page.tables["cost model per architecture"]
    assert [model["header"], *model["rows"]] == cost
    assert column(model, "architecture") == ARCHITECTURES and "-" not in column(model, "fixed_s")

    # every plot of report.md embedded, byte for byte, and each one decodes
    linked = re.findall(r"!\[[^]]*\]\(([^)]+\.png)\)", markdown)
    assert len(linked) == PLOTS and "linear-timeline.png" in linked and "scaling.png" in linked
    sources = [img["src"] for img in page.images]
    assert sources == ["data:image/png;base64," + base64.b64encode((results / n).read_bytes()).decode() for n in linked]
    for src in sources:
        with Image.open(io.BytesIO(base64.b64decode(src.partition(",")[2]))) as image:
            image.load()
            assert image.width > 300 and image.height > 100

    # the gates' verdicts, from gates.json, which the gates wrote when they judged the session
    verdicts = json.loads((results / "gates.json").read_text())
    assert len(verdicts) == BENCHMARKS
    assert {(v["metric"], v["stat"], v["status"], v["failed"], v["message"]) for v in verdicts} == {
        ("overhead_s", "median", "new", False, "")}
    gates = page.tables["gates: one verdict per benchmark and gate"]
    assert column(gates, "benchmark") == [v["benchmark"] for v in verdicts]
    assert set(column(gates, "verdict")) == {"new (passes)"} and set(column(gates, "baseline")) == {"-"}
    assert "History" not in text  # no history/ folder here


@needs_chromium
def test_chromium_renders_the_tables_and_plots_and_requests_nothing(results, tmp_path, proxy):
    expected = Page((results / "report.html").read_text())
    shot = tmp_path / "page.png"
    visit = chromium(results / "report.html", tmp_path / "browser", proxy, "--dump-dom", f"--screenshot={shot}",
                     "--window-size=1280,3000")
    dom = Page(visit.stdout)
    assert "js" in dom.classes  # the page's script ran: the Content-Security-Policy lets its own script in
    assert {label: t["rows"] for label, t in dom.tables.items()} == {
        label: t["rows"] for label, t in expected.tables.items()}
    assert len(dom.tables) == len(expected.tables) >= 6 and all(t["rows"] for t in dom.tables.values())
    assert len(dom.images) == PLOTS and all(img["src"].startswith("data:image/png;base64,") for img in dom.images)

    with Image.open(shot) as image:
        colours = image.convert("RGB").getcolors(maxcolors=1 << 24)
    assert len(colours) > 200, "the screenshot is (nearly) blank"
    blue = sum(n for n, rgb in colours if max(abs(a - b) for a, b in zip(rgb, COMPUTE_BLUE)) <= 8)
    assert blue > 1000, "the time plot's bars are not on the screen: its image was not drawn"
    assert (visit.page_requests, visit.unexplained) == ([], [])


SORT = """<script>
function sortBy(label, name, clicks) {
  var table = document.querySelector('table[aria-label="' + label + '"]');
  var cells = table.tHead.rows[0].cells;
  for (var i = 0; i < cells.length; i++) {
    if (cells[i].textContent !== name) { continue; }
    for (var n = 0; n < clicks; n++) { cells[i].querySelector("button").click(); }
  }
}
sortBy("linear: medians per architecture", "wall (s)", 2);
sortBy("gates: one verdict per benchmark and gate", "now", 1);
</script>
"""


@needs_chromium
def test_clicking_a_column_header_sorts_its_table(results, tmp_path, proxy):
    """The page's own script, driven by clicks from a test script added to a copy (the copy
    drops the policy that would keep that script out)."""
    text = (results / "report.html").read_text()
    text = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", text).replace("</body>", SORT + "</body>")
    (tmp_path / "clicked.html").write_text(text)
    before = Page(text).tables
    after = Page(chromium(tmp_path / "clicked.html", tmp_path / "dom", proxy, "--dump-dom").stdout).tables

    linear, original = after["linear: medians per architecture"], before["linear: medians per architecture"]
    walls = [number(w) for w in column(linear, "wall (s)")]
    assert walls == sorted(walls, reverse=True) and column(linear, "architecture") == ["subprocess", "inprocess"]
    assert column(original, "architecture") == ["inprocess", "subprocess"]
    assert linear["sorted"] == {linear["header"].index("wall (s)"): "descending"}
    gates = after["gates: one verdict per benchmark and gate"]
    now = [number(v) for v in column(gates, "now")]
    assert now == sorted(now) and gates["sorted"] == {gates["header"].index("now"): "ascending"}
    assert sorted(gates["rows"]) == sorted(before["gates: one verdict per benchmark and gate"]["rows"])


@needs_chromium
def test_the_checks_catch_a_page_that_fetches_something(tmp_path, proxy):
    """The same checks on a page with an external stylesheet and images: each is found in the
    markup, in the net log as the page's own request, and at the recording proxy."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><link rel="stylesheet" href="http://example.invalid/style.css">'
                   '<style>body { background: url("https://example.invalid/bg.png") }</style></head>'
                   '<body><img src="http://example.invalid/pixel.png" alt=""></body></html>')
    assert Page(bad.read_text()).external == ["<link href=http://example.invalid/style.css>",
                                              "css https://example.invalid/bg.png",
                                              "<img src=http://example.invalid/pixel.png>"]
    visit = chromium(bad, tmp_path / "dom", proxy, "--dump-dom")
    assert sorted(visit.page_requests) == ["http://example.invalid/pixel.png", "http://example.invalid/style.css",
                                           "https://example.invalid/bg.png"]
    assert "GET http://example.invalid/pixel.png HTTP/1.1" in visit.unexplained, visit.unexplained
    assert "CONNECT example.invalid:443 HTTP/1.1" in visit.unexplained, visit.unexplained


# -- the parts of the page -------------------------------------------------------


def png(path: Path, colour: tuple[int, int, int]) -> None:
    Image.new("RGB", (40, 20), colour).save(path)


def test_failed_gates_are_marked_history_plots_embedded_and_data_escaped(tmp_path):
    (tmp_path / "gates.json").write_text(json.dumps([
        {"benchmark": "test_x[<b>arch</b>]", "gate": "overhead_s:median:+20%", "metric": "overhead_s",
         "stat": "median", "status": "FAIL", "failed": True, "baseline": 0.1, "now": 0.5, "change": "+400.0% (+0.4 s)",
         "p_value": 0.0143, "message": "test_x: overhead_s median 0.1 s -> 0.5 s", "note": "", "remark": ""},
        {"benchmark": "test_y", "gate": "peak_rss_bytes:max:+10%", "metric": "peak_rss_bytes", "stat": "max",
         "status": "ok", "failed": False, "baseline": 2**20, "now": 2**20, "change": "+0.0% (+0 B)",
         "p_value": 0.5, "message": "", "note": "", "remark": "baseline: 0002 (0003 ran elsewhere)"},
    ]))
    (tmp_path / "history").mkdir()
    png(tmp_path / "history" / "b-overhead.png", (200, 30, 30))
    png(tmp_path / "history" / "a-wall.png", (30, 200, 30))
    (tmp_path / "history" / "notes.txt").write_text("not a plot")
    content = html.Report(report.INTRO, None, ["<script>alert(1)</script>"], [html.Workload(
        '<img src=x onerror="alert(1)">', ["smoke"], [("medians per architecture", ["architecture", "wall (s)"],
                                                      [["<i>arch</i>", "1.000"]])], [], [("run-<1>", "failed")])], None)
    text = html.page(tmp_path, content)
    page = Page(text)
    assert page.external == [] and "<script>alert" not in text and "<img src=x" not in text and "<i>arch" not in text
    gates = page.tables["gates: one verdict per benchmark and gate"]
    assert column(gates, "verdict") == ["FAIL", "ok"] and column(gates, "now") == ["0.5 s", "1 MiB"]
    assert '<tr class="fail"><th scope="row">test_x[&lt;b&gt;arch&lt;/b&gt;]</th>' in text
    assert '<td class="status-FAIL">FAIL</td>' in text
    assert "<li>overhead_s:median:+20% failed: test_x: overhead_s median 0.1 s -&gt; 0.5 s</li>" in text
    assert "2 gated figures: 1 FAIL, 1 ok" in text and "baseline: 0002 (0003 ran elsewhere)" in text
    assert [img["alt"] for img in page.images] == ["trend plot a-wall", "trend plot b-overhead"]
    assert page.images[0]["src"] == "data:image/png;base64," + base64.b64encode(
        (tmp_path / "history" / "a-wall.png").read_bytes()).decode()
    assert text.index('<section id="history">') > text.index("<h2>&lt;img src=x")

    (tmp_path / "gates.json").write_text('{"torn": ')
    assert "gates.json</code> cannot be read: Expecting value" in html.page(tmp_path, content)


def linear_runs(results: Path, tmp_path: Path) -> Path:
    """The session's linear runs alone, in a runs.jsonl of their own: a report with three plots."""
    lines = [line for line in (results / "runs.jsonl").read_text().splitlines() if '"workload": "linear"' in line]
    path = tmp_path / "saved" / "runs.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    return path


def test_mlpbench_report_writes_report_html_only_with_the_html_flag(results, tmp_path, capsys):
    runs = linear_runs(results, tmp_path)
    out = tmp_path / "out"
    assert report.main([str(runs), "-o", str(out)]) == 0
    assert (out / "report.md").exists() and not (out / "report.html").exists()
    assert capsys.readouterr().out == f"wrote {out / 'report.md'}\n"
    assert report.main([str(runs), "-o", str(out), "--html"]) == 0
    assert capsys.readouterr().out == f"wrote {out / 'report.md'}\nwrote {out / 'report.html'}\n"
    page = Page((out / "report.html").read_text())
    assert list(page.tables) == ["linear: medians per architecture", "linear: The workload's own figures (medians)"]
    assert len(page.images) == 3 and page.external == []


def test_report_html_without_matplotlib_says_so(results, tmp_path):
    runs = linear_runs(results, tmp_path)
    code = (  # a fresh interpreter: matplotlib is imported in this one
        "import sys, pathlib\n"
        "sys.modules['matplotlib'] = None\n"
        "from pytest_mlpbench.results import report\n"
        f"report.write_report(report.load(pathlib.Path({str(runs)!r})), pathlib.Path({str(tmp_path)!r}), html=True)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    text = (tmp_path / "report.html").read_text()
    assert '<p class="note">No plots: matplotlib is not installed (pip install matplotlib).</p>' in text
    assert "<img" not in text and Page(text).tables["linear: medians per architecture"]["rows"]
