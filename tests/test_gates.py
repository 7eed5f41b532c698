"""Regression gates: expressions, the decision, saved histories, and whole
sessions that gate against the runs earlier sessions saved."""
import json
import os
import re
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import scipy.stats  # noqa: F401  loaded once here: an inline pytester run would import it again, which numpy refuses

from pytest_mlpbench.gates.history import History
from pytest_mlpbench.gates.identity import differences, identity
from pytest_mlpbench.gates.spec import GateError, parse_gate
from pytest_mlpbench.gates.storage import Store, load_run
from pytest_mlpbench.gates.verdict import decide

TESTS = Path(__file__).parent

# An architecture that adds, on request of the environment, a real delay per
# run, real memory held during the run, or a scripted delay per round.
CONFTEST = '''
import os, time
from fakes import LINEAR
from pytest_mlpbench.architectures.inprocess import InProcess


class Injected(InProcess):
    name = "injected"
    rounds = 0

    def run(self, workload, run):
        delays = [float(d) for d in os.environ.get("INJECT_DELAYS", "0").split(",")]
        time.sleep(delays[self.rounds % len(delays)])
        self.rounds += 1
        hog = bytearray(b"x") * (int(os.environ.get("INJECT_MB", "0")) << 20)
        super().run(workload, run)
        del hog


def pytest_mlpbench_register(registry):
    registry.add_workload(LINEAR)
    registry.add_architecture("injected", Injected)
'''

TEST_FILE = '''
import pytest


@pytest.mark.mlpbench_fail("overhead_s:median:+0.1")
def test_linear(mlpbench):
    mlpbench.run("linear")
'''

INI = "[pytest]\nmlpbench_fail =\n    peak_rss_bytes:max:+30%\n    value:min:-1%\n"


# -- expressions ---------------------------------------------------------------


@pytest.mark.parametrize("text, sign, limit, relative", [
    ("overhead_s:median:+20%", 1, 20.0, True),
    ("peak_rss_bytes:max:+0.5", 1, 0.5, False),
    ("accuracy:min:-2%", -1, 2.0, True),
    ("accuracy:mean:-0.01", -1, 0.01, False),
])
def test_gate_expressions(text, sign, limit, relative):
    gate = parse_gate(text)
    assert (gate.sign, gate.limit, gate.relative, gate.text) == (sign, limit, relative, text)


@pytest.mark.parametrize("text, names", [
    ("overhead_s:median", "is not METRIC:STAT:THRESHOLD"),
    ("overhead_s:avg:+10%", "STAT 'avg' is not one of min, median, mean, max"),
    ("overhead_s:median:10%", "THRESHOLD '10%' must be a signed number"),
    ("overhead_s:median:+ten", "THRESHOLD '+ten'"),
    ("9lives:median:+1", "METRIC '9lives' is not a figure name; figures: wall_s, startup_s"),
])
def test_bad_expressions_name_the_bad_part(text, names):
    with pytest.raises(GateError, match=names.replace("(", r"\(").replace("+", r"\+")):
        parse_gate(text)


# -- the decision ----------------------------------------------------------------


def test_a_clear_shift_fails_with_its_p_value():
    verdict = decide("b", parse_gate("overhead_s:median:+10%"), [1.0, 1.1, 0.9, 1.05], [1.5, 1.6, 1.4, 1.55], 0.05)
    assert verdict.status == "FAIL" and verdict.p_value == pytest.approx(1 / 70)
    assert "overhead_s median 1.025 s -> 1.525 s, +48.8% (+0.5 s), beyond +10% (p=0.0143)" in verdict.message()


def test_lower_is_worse_gates_fail_on_a_drop_only():
    gate = parse_gate("accuracy:min:-0.01")
    assert decide("b", gate, [0.9] * 4, [0.8, 0.81, 0.82, 0.8], 0.05).status == "FAIL"
    assert decide("b", gate, [0.9] * 4, [0.99, 0.98, 0.97, 0.99], 0.05).status == "ok"


def test_too_few_rounds_falls_back_to_the_plain_threshold_and_says_so():
    gate = parse_gate("cpu_s:mean:+0.5")
    verdict = decide("b", gate, [1.0, 1.0], [2.0, 2.1], 0.05)
    assert verdict.status == "FAIL" and verdict.p_value is None
    assert "too few rounds for a rank test (2 now, 2 baseline: the smallest possible p is 0.167" in verdict.note
    assert decide("b", gate, [1.0, 1.0], [1.2, 1.3], 0.05).status == "ok"


def test_a_shift_inside_the_threshold_passes_even_when_significant():
    verdict = decide("b", parse_gate("wall_s:median:+50%"), [1.0, 1.01, 1.02], [1.2, 1.21, 1.22], 0.05)
    assert verdict.status == "ok" and verdict.p_value == pytest.approx(0.05)


def test_no_baseline_passes_and_says_how_to_save_one():
    verdict = decide("b", parse_gate("wall_s:median:+5%"), [], [1.0, 1.1], 0.05)
    assert verdict.status == "new" and "--benchmark-autosave" in verdict.note


def test_noise_does_not_fail_but_a_real_regression_does():
    """Repeated trials: both samples drawn from one noisy distribution (20% spread,
    5 rounds each) against a +10% gate; then with a real +50% shift."""
    rng = np.random.default_rng(7)
    gate = parse_gate("overhead_s:median:+10%")
    trials = 400

    def failures(shift):
        verdicts = [decide("b", gate, list(rng.lognormal(0, 0.2, 5)), list(rng.lognormal(0, 0.2, 5) * shift), 0.05)
                    for _ in range(trials)]
        plain = sum(v.now > v.baseline * 1.1 for v in verdicts)
        return sum(v.failed for v in verdicts) / trials, plain / trials

    gated, plain = failures(1.0)
    assert plain > 0.2  # a plain +10% threshold fails CI on noise alone this often
    assert gated <= 0.05  # the rank test keeps false alarms at alpha or below
    gated, _ = failures(1.5)
    assert gated > 0.6


# -- saved histories ---------------------------------------------------------------


PARAMS = {"data_dir": None, "images": 24, "shards": 3}
MACHINE = {"node": "runner-1", "machine": "x86_64", "python_implementation": "CPython", "python_version": "3.11.9",
           "release": "6.5.0-1025-azure", "system": "Linux", "cpu": {"brand_raw": "AMD EPYC 7763", "count": 4}}


def saved(directory: Path, number: int, values: list[float], name="unversioned", scale="smoke", params=PARAMS,
          machine=MACHINE):
    """A saved run of one benchmark; ``params`` or ``machine`` None: a file without them, as older runs are."""
    rounds = [{"run_id": f"r{i}", "outcome": "passed", "wall_s": v} for i, v in enumerate(values)]
    info = {"workload": "w", "scale": scale, "rounds": rounds, **({"params": params} if params is not None else {})}
    bench = {"fullname": "t.py::t[a]", "extra_info": {"mlpbench": info}}
    path = directory / f"{number:04d}_{name}.json"
    path.write_text(json.dumps({**({"machine_info": machine} if machine is not None else {}), "benchmarks": [bench]}))
    return path


def like(scale="smoke", machine=MACHINE, **params):
    """The identity of a run now: workload w at ``scale`` with PARAMS updated by ``params`` on ``machine``."""
    return identity({"workload": "w", "scale": scale, "params": {**PARAMS, **params}}, machine)


def test_history_picks_runs_by_number_name_or_path_and_pools_n(tmp_path):
    saved(tmp_path, 1, [1.0], "main")
    saved(tmp_path, 2, [2.0], scale="small")
    third = saved(tmp_path, 3, [3.0])
    saved(tmp_path, 4, [4.0])
    assert History.load(tmp_path).baseline("t.py::t[a]", like()).rounds[0]["wall_s"] == 4.0
    assert History.load(tmp_path, "3").baseline("t.py::t[a]", like()).rounds[0]["wall_s"] == 3.0
    assert History.load(tmp_path, str(third)).baseline("t.py::t[a]", like()).rounds[0]["wall_s"] == 3.0
    assert History.load(tmp_path, "main").baseline("t.py::t[a]", like()).rounds[0]["wall_s"] == 1.0
    history = History.load(tmp_path, history=3)
    found = history.baseline("t.py::t[a]", like())
    assert [r["wall_s"] for r in found.rounds] == [1.0, 3.0, 4.0]  # the run at another scale is left out
    assert history.remark(found) == 'left out: 0002_unversioned differs in scale (saved "small", now "smoke")'


def test_a_run_with_other_parameters_is_no_baseline_and_the_reason_names_them(tmp_path):
    saved(tmp_path, 1, [1.0], "main", params={**PARAMS, "images": 48})
    history = History.load(tmp_path)
    found = history.baseline("t.py::t[a]", like())
    assert found.rounds == [] and found.runs == []
    assert history.remark(found) == ("new: no baseline with the same workload, scale, parameters and machine: "
                                     "0001_main differs in images (saved 48, now 24); "
                                     "--mlpbench-compare-unlike=yes compares anyway")
    verdict = decide("t", parse_gate("wall_s:median:+5%"), found.rounds, [1.0], 0.05)
    assert verdict.status == "new"
    anyway = History.load(tmp_path, unlike=True)
    found = anyway.baseline("t.py::t[a]", like())
    assert [r["wall_s"] for r in found.rounds] == [1.0]
    assert anyway.remark(found) == ("compared anyway (--mlpbench-compare-unlike=yes): "
                                    "0001_main differs in images (saved 48, now 24)")


@pytest.mark.parametrize("saved_params, now, message", [
    ({**PARAMS, "data_dir": "/data/cifar"}, {}, 'data_dir (saved "/data/cifar", now generated data)'),
    ({**PARAMS, "model": "builtin"}, {}, 'model (saved "builtin", now not set)'),
    (PARAMS, {"images": 48, "shards": 4}, "images (saved 24, now 48), shards (saved 3, now 4)"),
    (None, {}, "workload parameters (unknown: the saved run predates their recording)"),
])
def test_every_differing_parameter_and_the_data_source_are_named(tmp_path, saved_params, now, message):
    saved(tmp_path, 1, [1.0], params=saved_params)
    history = History.load(tmp_path)
    found = history.baseline("t.py::t[a]", like(**now))
    assert found.rounds == [] and f"0001_unversioned differs in {message};" in history.remark(found)


def test_unknown_parameters_on_both_sides_do_not_match(tmp_path):
    old = identity({"workload": "w", "scale": "smoke"}, MACHINE)
    assert differences(old, old) == ["workload parameters (unknown: neither run records them)"]
    now_only = identity({"workload": "w", "scale": "smoke"}, MACHINE)
    assert differences(like(), now_only) == ["workload parameters (unknown: this run does not record them)"]


@pytest.mark.parametrize("change, message", [
    ({"cpu": {"brand_raw": "Intel Xeon Platinum 8370C", "count": 4}},
     'machine.cpu (saved "Intel Xeon Platinum 8370C", now "AMD EPYC 7763")'),
    ({"cpu": {"brand_raw": "AMD EPYC 7763", "count": 2}}, "machine.cpus (saved 2, now 4)"),
    ({"machine": "aarch64"}, 'machine.arch (saved "aarch64", now "x86_64")'),
    ({"python_version": "3.12.1"}, 'machine.python (saved "CPython 3.12", now "CPython 3.11")'),
    ({"python_implementation": "PyPy"}, 'machine.python (saved "PyPy 3.11", now "CPython 3.11")'),
])
def test_a_run_from_another_machine_is_no_baseline(tmp_path, change, message):
    saved(tmp_path, 1, [1.0], machine={**MACHINE, **change})
    history = History.load(tmp_path)
    found = history.baseline("t.py::t[a]", like())
    assert found.rounds == [] and f"0001_unversioned differs in {message};" in history.remark(found)


def test_host_name_kernel_release_and_python_patch_level_are_the_same_machine(tmp_path):
    saved(tmp_path, 1, [1.0], machine={**MACHINE, "node": "runner-2", "release": "6.5.0-1026-azure",
                                       "python_version": "3.11.10", "cpu": {**MACHINE["cpu"], "hz_actual": [1, 0]}})
    history = History.load(tmp_path)
    found = history.baseline("t.py::t[a]", like())
    assert [r["wall_s"] for r in found.rounds] == [1.0] and history.remark(found) == ""


def test_a_file_without_machine_info_is_no_baseline(tmp_path):
    saved(tmp_path, 1, [1.0], machine=None)
    history = History.load(tmp_path)
    found = history.baseline("t.py::t[a]", like())
    assert found.rounds == [] and "machine (unknown: the saved run has no machine_info)" in history.remark(found)


def test_an_older_like_run_is_the_baseline_and_the_newer_unlike_ones_are_named(tmp_path):
    saved(tmp_path, 1, [1.0])
    saved(tmp_path, 2, [2.0], params={**PARAMS, "images": 48})
    saved(tmp_path, 3, [3.0], params=None)
    history = History.load(tmp_path)
    found = history.baseline("t.py::t[a]", like())
    assert [r["wall_s"] for r in found.rounds] == [1.0] and [r.label for r in found.runs] == ["0001_unversioned"]
    assert history.remark(found) == ("left out: 0003_unversioned differs in workload parameters (unknown: the saved "
                                     "run predates their recording) (and 1 more unlike run)")
    with pytest.raises(GateError, match="run 'nope' matches no saved run"):
        History.load(tmp_path, "nope")


@pytest.mark.parametrize("content, message", [
    ("{not json", "not readable as JSON"),
    ('{"rows": [1, 2]}', "not a pytest-benchmark result file"),
    ('[1, 2]', "not a pytest-benchmark result file"),
])
def test_corrupt_or_foreign_files_are_named(tmp_path, content, message):
    bad = tmp_path / "0001_bad.json"
    bad.write_text(content)
    with pytest.raises(GateError, match=f"{bad}: {message}"):
        load_run(bad)


# -- saved runs through pytest-benchmark's storage API -------------------------------


def test_file_storage_is_listed_and_read_through_pytest_benchmark(tmp_path, monkeypatch):
    from pytest_benchmark.storage.file import FileStorage

    read = []
    load = FileStorage.load

    def spy(self, *globs_or_files):
        for key, data in load(self, *globs_or_files):
            read.append(Path(key).name)
            yield key, data

    monkeypatch.setattr(FileStorage, "load", spy)
    machine = tmp_path / "storage" / "Linux-CPython-3.11-64bit"
    (machine.parent / "Linux-CPython-3.12-64bit").mkdir(parents=True)
    machine.mkdir()
    one = saved(machine, 1, [1.0], "main")
    data = json.loads(one.read_text())
    data["benchmarks"][0]["stats"] = {"mean": 1.0}  # as pytest-benchmark saves it
    one.write_text(json.dumps(data))
    saved(machine, 2, [2.0])  # no stats: pytest-benchmark skips it, the gates take it as they always did
    saved(machine.parent / "Linux-CPython-3.12-64bit", 3, [3.0])  # another machine's
    saved(machine.parent, 4, [4.0])  # at the top of the storage: no machine's
    history = History.load(machine, history=5)
    assert [r.label for r in history.runs] == ["0001_main", "0002_unversioned"] and history.where == machine
    assert read == ["0001_main.json"]
    assert [r["wall_s"] for r in history.baseline("t.py::t[a]", like()).rounds] == [1.0, 2.0]


def test_compare_on_a_missing_storage_says_so_and_creates_nothing(tmp_path, capsys):
    from pytest_mlpbench.gates.compare import main

    assert main(["--storage", f"file://{tmp_path / 'none'}", "--machine", "m"]) == 2
    assert f"error: no saved runs in {tmp_path / 'none' / 'm'} (machine directories in {tmp_path / 'none'}: none)" \
        in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


def test_compare_takes_json_files_from_anywhere_without_a_storage(tmp_path, capsys, monkeypatch):
    """As the README compares a run of your own with the committed reference run."""
    from pytest_mlpbench.gates.compare import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "ref").mkdir(), (tmp_path / "mine").mkdir()
    reference = saved(tmp_path / "ref", 1, [1.0, 1.1, 0.9, 1.0, 1.05]).rename(tmp_path / "ref" / "benchmark.json")
    mine = saved(tmp_path / "mine", 7, [2.0, 2.1, 1.9, 2.0, 2.05])
    assert main([str(reference), str(mine), "--fail", "wall_s:median:+10%"]) == 1
    out = capsys.readouterr().out
    assert f"now: {mine}" in out and re.search(r"t\.py::t\[a\] +wall_s +median .*FAIL", out)
    assert not (tmp_path / ".benchmarks").exists()


class KeyedStorage:
    """A storage without files whose ``load(prefix)`` returns whole runs, keyed, oldest first."""

    def __init__(self, runs):
        self.runs, self.prefixes = runs, []

    def __str__(self):
        return "['http://user:secret@es:9200']"

    def load(self, prefix=None):
        self.prefixes.append(prefix)
        yield from self.runs


def keyed(key, values, **params):
    rounds = [{"run_id": f"r{i}", "outcome": "passed", "wall_s": v} for i, v in enumerate(values)]
    info = {"workload": "w", "scale": "smoke", "rounds": rounds, "params": {**PARAMS, **params}}
    return key, {"machine_info": MACHINE, "benchmarks": [{"fullname": "t.py::t[a]", "extra_info": {"mlpbench": info}}]}


def test_runs_of_a_storage_without_files_are_selected_by_place_or_key_and_matched_alike():
    storage = KeyedStorage([keyed("c1_2024-01-01", [1.0]), keyed("c2_2024-01-02", [2.0], images=48),
                            keyed("c3_2024-01-03", [3.0])])
    history = History.load(Store(storage, "Linux-CPython-3.11-64bit"), history=3)
    assert storage.prefixes == ["Linux-CPython-3.11-64bit_"]
    assert history.where == "['http://***:***@es:9200'] (machine Linux-CPython-3.11-64bit)"
    found = history.baseline("t.py::t[a]", like())
    assert [r["wall_s"] for r in found.rounds] == [1.0, 3.0]
    assert history.remark(found) == "left out: c2_2024-01-02 differs in images (saved 48, now 24)"
    assert [r.label for r in History.load(Store(storage, "m"), "2").runs] == ["c1_2024-01-01", "c2_2024-01-02"]
    assert History.load(Store(storage, "m"), "c1").runs[-1].number == 1
    with pytest.raises(GateError, match="run 'c9' matches no saved run"):
        History.load(Store(storage, "m"), "c9")


ES_URI = "elasticsearch+http://user:secret@es.example:9200/idx/doc?project_name=proj"


class FakeElasticsearch:
    """The elasticsearch client under pytest-benchmark's own ElasticsearchStorage."""

    down = False
    hits: list = []
    searches: list = []

    def __init__(self, hosts, serializer=None):
        self.hosts = hosts
        self.indices = types.SimpleNamespace(create=self.create)

    def create(self, **kwargs):
        if self.down:
            raise ConnectionError("[Errno 111] Connection refused")

    def search(self, index, doc_type, body):
        self.searches.append((self.hosts, index, doc_type, body))
        return {"hits": {"hits": [{"_source": hit} for hit in self.hits]}}


@pytest.fixture
def elasticsearch(monkeypatch):
    client = type("Elasticsearch", (FakeElasticsearch,), {"hits": [], "searches": []})
    module, serializer = types.ModuleType("elasticsearch"), types.ModuleType("elasticsearch.serializer")
    serializer.JSONSerializer = type("JSONSerializer", (), {})
    module.Elasticsearch, module.serializer = client, serializer
    monkeypatch.setitem(sys.modules, "elasticsearch", module)
    monkeypatch.setitem(sys.modules, "elasticsearch.serializer", serializer)
    monkeypatch.delitem(sys.modules, "pytest_benchmark.storage.elasticsearch", raising=False)
    yield client
    sys.modules.pop("pytest_benchmark.storage.elasticsearch", None)  # bound to the fake client


def es_hit(day: int, machine="Linux-CPython-3.11-64bit"):
    """One benchmark as pytest-benchmark saves it to elasticsearch, extra_info included."""
    info = {"workload": "w", "scale": "smoke", "params": PARAMS, "rounds": [{"outcome": "passed", "wall_s": 1.0}]}
    return {"group": None, "name": "t[a]", "fullname": "t.py::t[a]", "params": None, "param": None, "options": {},
            "stats": {"mean": 1.0}, "extra_info": {"mlpbench": info}, "benchmark_id": f"{machine}_run{day}",
            "machine_info": MACHINE, "commit_info": {"id": f"c{day}", "project": "proj"},
            "datetime": f"2024-01-0{day}T00:00:00.000000", "version": "5.2.3"}


def test_an_elasticsearch_uri_goes_to_pytest_benchmarks_storage(elasticsearch):
    store = Store.open(ES_URI, "Linux-CPython-3.11-64bit")
    assert type(store.storage).__name__ == "ElasticsearchStorage"
    assert store.entries() == [] and "no saved runs in ['http://***:***@es.example:9200']" in store.nothing_saved()
    hosts, index, doctype, body = elasticsearch.searches[-1]
    assert (hosts, index, doctype) == (["http://user:secret@es.example:9200"], "idx", "doc")
    assert body["query"]["bool"] == {"filter": {"term": {"commit_info.project": "proj"}},
                                     "must": {"prefix": {"_id": "Linux-CPython-3.11-64bit_"}}}
    elasticsearch.hits = [es_hit(2), es_hit(1)]
    with pytest.raises(GateError) as error:  # pytest-benchmark 5 drops extra_info when it loads from elasticsearch
        store.entries()
    assert "ElasticsearchStorage returns the saved benchmarks without their extra_info" in str(error.value)
    assert "secret" not in str(error.value)


def test_an_elasticsearch_storage_that_cannot_be_reached_or_used_is_a_clear_error(elasticsearch, monkeypatch):
    elasticsearch.down = True
    with pytest.raises(GateError, match=r"storage 'elasticsearch\+http://\*\*\*:\*\*\*@es.example:9200/idx/doc"
                                        r"\?project_name=proj' cannot be reached: ConnectionError: .*refused"):
        Store.open(ES_URI, "m")
    elasticsearch.down = False
    store = Store.open(ES_URI, "m")
    monkeypatch.setattr(store.storage, "_search", lambda *args: (_ for _ in ()).throw(TimeoutError("timed out")))
    with pytest.raises(GateError, match=r"cannot read the saved runs from \['http://\*\*\*:\*\*\*@es.example:9200'\] "
                                        r"\(machine m\): TimeoutError: timed out"):
        store.entries()
    with pytest.raises(GateError, match="Storage must be in form of file://path or elasticsearch"):
        Store.open("s3://bucket/benchmarks", "m")


def test_compare_hands_an_elasticsearch_uri_to_pytest_benchmark(monkeypatch, capsys):
    from pytest_mlpbench.gates.compare import main

    monkeypatch.setitem(sys.modules, "elasticsearch", None)  # not installed
    monkeypatch.delitem(sys.modules, "pytest_benchmark.storage.elasticsearch", raising=False)
    assert main(["--storage", ES_URI]) == 2
    err = capsys.readouterr().err
    assert "error: storage 'elasticsearch+http://***:***@es.example:9200/idx/doc?project_name=proj': Please " \
           "install elasticsearch or pytest-benchmark[elasticsearch]" in err and "secret" not in err



# -- whole sessions ----------------------------------------------------------------


class Project:
    def __init__(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch):
        self.pytester = pytester
        self.monkeypatch = monkeypatch
        pytester.makeconftest(CONFTEST)
        pytester.makepyfile(test_linear=TEST_FILE)
        pytester.makeini(INI)

    def run(self, *args: str, delays="0", mb=0, save=True, inline=False) -> pytest.RunResult:
        """A session in a fresh process; ``inline`` for ones that stop at a usage error."""
        self.monkeypatch.setenv("INJECT_DELAYS", delays)
        self.monkeypatch.setenv("INJECT_MB", str(mb))
        run = self.pytester.runpytest_inprocess if inline else self.pytester.runpytest_subprocess
        return run(
            "-p", "no:cacheprovider", "--mlpbench-arch=injected", "--mlpbench-scale=smoke", "--mlpbench-warmup=0",
            "--mlpbench-rounds=4", *(["--benchmark-autosave"] if save else []), *args)

    def compare(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "pytest_mlpbench", "compare", *args],
                              cwd=self.pytester.path, capture_output=True, text=True, timeout=60)


@pytest.fixture
def project(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    return Project(pytester, monkeypatch)


def test_first_run_has_no_baseline_and_passes_then_an_unchanged_run_passes(project):
    first = project.run(save=False)
    assert first.ret == 0
    first.stdout.fnmatch_lines(["*no baseline yet in *; this run can be saved with --benchmark-autosave; gates pass",
                                "*test_linear.py::test_linear[[]injected[]]*overhead_s*median*+0.1*new (passes)*"])
    saved = project.run()
    assert saved.ret == 0
    saved.stdout.fnmatch_lines(["*no baseline yet in *; this run is saved as the first; gates pass"])
    again = project.run()
    assert again.ret == 0, again.stdout.str()
    again.stdout.fnmatch_lines(["*mlpbench gates (baseline: 0001_*; alpha 0.05)*"])
    rows = [line for line in again.stdout.lines if line.startswith("test_linear.py::test_linear[injected]")]
    assert [row.split()[1] for row in rows] == ["peak_rss_bytes", "value", "overhead_s"]
    assert all(row.rstrip().endswith(" ok") for row in rows), rows


def test_injected_slowdown_and_extra_memory_fail_with_the_numbers(project):
    assert project.run().ret == 0
    slow = project.run("--mlpbench-baseline=1", delays="0.3", save=False)
    assert slow.ret == pytest.ExitCode.TESTS_FAILED
    slow.stdout.fnmatch_lines([
        "*mlpbench gate: overhead_s:median:+0.1 failed: test_linear.py::test_linear[[]injected[]]: "
        "overhead_s median 0.0* s -> 0.[23]* s, +*% (+0.[23]* s), beyond +0.1 (p=0.0143)",
    ])
    assert "peak_rss_bytes:max:+30% failed" not in slow.stdout.str()
    hungry = project.run(mb=200, save=False)
    assert hungry.ret == pytest.ExitCode.TESTS_FAILED
    hungry.stdout.fnmatch_lines([
        "*mlpbench gate: peak_rss_bytes:max:+30% failed: test_linear.py::test_linear[[]injected[]]: "
        "peak_rss_bytes max * MiB -> * MiB, +*% (+* MiB), beyond +30% (p=0.0143)",
    ])


def test_a_median_up_by_chance_does_not_fail(project):
    """Both sessions take their rounds from the same spread of delays; this
    session's median lands 40% higher, past a +20% threshold, but the ranks
    mix: the rank test calls it noise and the gate passes, stating p."""
    assert project.run(delays="0,0.08,0.4,0.48").ret == 0
    noisy = project.run("--mlpbench-fail=overhead_s:median:+20%", delays="0.04,0.32,0.36,0.52")
    assert noisy.ret == 0, noisy.stdout.str()
    row = next(line for line in noisy.stdout.lines if " overhead_s " in line and " +20% " in line)
    change, p, verdict = re.search(r" ([+-][\d.]+)% \(.*\)\s+([\d.]+)\s+(\w+)$", row).groups()
    assert float(change) > 20 and float(p) > 0.05 and verdict == "ok", row


@pytest.mark.parametrize("args, message", [
    (["--mlpbench-fail=overhead_s:avg:+10%"],
     "*--mlpbench-fail='overhead_s:avg:+10%': STAT 'avg' is not one of min, median, mean, max*"),
    (["--mlpbench-fail=overhead_s:median:20"], "*THRESHOLD '20' must be a signed number*+10% or +0.5*"),
    (["--mlpbench-alpha=5"], "*--mlpbench-alpha='5': must be between 0 and 1*"),
    (["--mlpbench-compare-unlike=maybe"], "*--mlpbench-compare-unlike='maybe': expected yes or no*"),
    (["--mlpbench-baseline=7"], "*mlpbench gates*run '7' matches no saved run (latest: none)*"),
])
def test_bad_gate_options_are_usage_errors(project, args, message):
    result = project.run(*args, save=False, inline=True)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_bad_marker_names_the_benchmark(project):
    project.pytester.makepyfile(test_linear=TEST_FILE.replace("+0.1", "+0.1s"))
    result = project.run(save=False, inline=True)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*test_linear.py::test_linear[[]injected[]]: mlpbench_fail marker: THRESHOLD '+0.1s'*"])


@pytest.mark.parametrize("content, message", [
    ("{truncated", "not readable as JSON"), ('{"some": "other tool"}', "not a pytest-benchmark result file")])
def test_corrupt_or_foreign_storage_files_are_named_before_running(project, content, message):
    from pytest_benchmark.utils import get_machine_id

    machine = project.pytester.path / ".benchmarks" / get_machine_id()
    machine.mkdir(parents=True)
    (machine / "0001_x.json").write_text(content)
    result = project.run(save=False, inline=True)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*{machine / '0001_x.json'}: {message}*"])
    assert "Traceback" not in result.stderr.str() and "passed" not in result.stdout.str()


def test_compare_prints_the_table_for_saved_runs(project):
    assert project.run().ret == 0
    assert project.run(mb=100).ret == 1
    table = project.compare()
    assert table.returncode == 0, table.stderr
    assert "baseline: 0001_" in table.stdout and "now: " in table.stdout
    row = next(line for line in table.stdout.splitlines() if " peak_rss_bytes " in line)
    assert row.split()[-1] == "higher"
    gated = project.compare("1", "2", "--fail", "peak_rss_bytes:max:+30%")
    assert gated.returncode == 1
    assert "FAILED gate peak_rss_bytes:max:+30%: test_linear.py::test_linear[injected]: peak_rss_bytes max" in gated.stdout
    missing = project.compare("9")
    assert missing.returncode == 2 and "error: run '9' matches no saved run" in missing.stderr


FAKE_ES = """
import json, os


class Elasticsearch:
    def __init__(self, hosts, serializer=None):
        self.indices = self

    def create(self, **kwargs):
        pass

    def search(self, index, doc_type, body):
        return {"hits": {"hits": [{"_source": hit} for hit in json.loads(os.environ.get("FAKE_ES_HITS", "[]"))]}}

    def index(self, **kwargs):
        pass
"""


def test_a_session_reads_elasticsearch_storage_through_pytest_benchmark(project):
    fake = project.pytester.path / "fake_es" / "elasticsearch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(FAKE_ES)
    (fake / "serializer.py").write_text("class JSONSerializer:\n    pass\n")
    project.monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(fake.parent), os.environ["PYTHONPATH"]]))
    storage = "--benchmark-storage=elasticsearch+http://es.example:9200/idx/doc?project_name=proj"
    first = project.run(storage, save=False)
    assert first.ret == 0, first.stdout.str() + first.stderr.str()
    first.stdout.fnmatch_lines(["*no baseline yet in [[]'http://es.example:9200'[]] (machine *); this run can be "
                                "saved with --benchmark-autosave; gates pass"])
    project.monkeypatch.setenv("FAKE_ES_HITS", json.dumps([es_hit(1)]))
    later = project.run(storage, save=False)
    assert later.ret == pytest.ExitCode.USAGE_ERROR
    later.stderr.fnmatch_lines(["*mlpbench gates: *ElasticsearchStorage returns the saved benchmarks without their "
                                "extra_info*"])


# -- whole sessions: baselines must be alike ------------------------------------------


def with_params(project: Project, params: str) -> None:
    project.pytester.makepyfile(test_linear=TEST_FILE.replace('run("linear")', f'run("linear", {params})'))


def saved_files(project: Project) -> list[Path]:
    from pytest_benchmark.utils import get_machine_id

    return sorted((project.pytester.path / ".benchmarks" / get_machine_id()).glob("0*.json"))


def verdicts(result: pytest.RunResult | subprocess.CompletedProcess) -> list[str]:
    """The verdict column of the gates' table."""
    lines = result.stdout.lines if isinstance(result, pytest.RunResult) else result.stdout.splitlines()
    rows = [line.rstrip() for line in lines if line.startswith("test_linear.py::test_linear[injected] ")]
    return ["new (passes)" if row.endswith("new (passes)") else row.split()[-1] for row in rows]


UNLIKE = ("test_linear.py::test_linear[[]injected[]]: new: no baseline with the same workload, scale, parameters and "
          "machine: 0001_* differs in {}; --mlpbench-compare-unlike=yes compares anyway")


def test_a_baseline_with_other_parameters_is_not_pooled_and_the_field_is_named(project):
    with_params(project, "sleep_s=0.01")
    assert project.run().ret == 0
    with_params(project, "sleep_s=0.02")
    other = project.run(save=False)
    assert other.ret == 0, other.stdout.str()
    other.stdout.fnmatch_lines([UNLIKE.format("sleep_s (saved 0.01, now 0.02)")])
    assert verdicts(other) == ["new (passes)"] * 3
    anyway = project.run("--mlpbench-compare-unlike=yes", save=False)
    assert anyway.ret == 0, anyway.stdout.str()
    anyway.stdout.fnmatch_lines(["test_linear.py::test_linear[[]injected[]]: compared anyway "
                                 "(--mlpbench-compare-unlike=yes): 0001_* differs in sleep_s (saved 0.01, now 0.02)"])
    assert verdicts(anyway) == ["ok"] * 3


def test_a_baseline_from_another_machine_is_not_pooled(project):
    assert project.run().ret == 0
    path = saved_files(project)[0]
    data = json.loads(path.read_text())
    data["machine_info"].update(node="another-runner", release="0.0.1-other")  # the same kind of machine
    path.write_text(json.dumps(data))
    same = project.run(save=False)
    assert same.ret == 0 and "compares anyway" not in same.stdout.str(), same.stdout.str()
    same.stdout.fnmatch_lines(["*test_linear.py::test_linear[[]injected[]]*overhead_s*median*+0.1* ok"])
    now = data["machine_info"]["cpu"].get("brand_raw")
    data["machine_info"]["cpu"]["brand_raw"] = "Doctored CPU 9000"
    path.write_text(json.dumps(data))
    other = project.run(save=False)
    assert other.ret == 0, other.stdout.str()
    other.stdout.fnmatch_lines([UNLIKE.format(f'machine.cpu (saved "Doctored CPU 9000", now {json.dumps(now)})')])
    assert verdicts(other) == ["new (passes)"] * 3
    anyway = project.run("-o", "mlpbench_compare_unlike=yes", save=False)  # the ini key
    assert anyway.ret == 0, anyway.stdout.str()
    anyway.stdout.fnmatch_lines(["*: compared anyway (--mlpbench-compare-unlike=yes): 0001_* differs in machine.cpu*"])


def test_a_baseline_saved_before_parameters_were_recorded_is_not_pooled(project):
    assert project.run().ret == 0
    path = saved_files(project)[0]
    data = json.loads(path.read_text())
    for bench in data["benchmarks"]:
        del bench["extra_info"]["mlpbench"]["params"]
    path.write_text(json.dumps(data))
    old = project.run(save=False)
    assert old.ret == 0, old.stdout.str()
    old.stdout.fnmatch_lines([UNLIKE.format("workload parameters (unknown: the saved run predates their recording)")])


def test_compare_leaves_out_unlike_runs_unless_told(project):
    with_params(project, "sleep_s=0.01")
    assert project.run().ret == 0
    with_params(project, "sleep_s=0.1")
    assert project.run("--mlpbench-compare-unlike=yes").ret == 0
    table = project.compare()
    assert table.returncode == 0, table.stderr
    assert set(verdicts(table)) == {"new (passes)"}, table.stdout
    assert re.search(r"^test_linear.py::test_linear\[injected\]: new: no baseline with the same workload, scale, "
                     r"parameters and machine: 0001_\S+ differs in sleep_s \(saved 0.01, now 0.1\); --unlike compares "
                     r"anyway$", table.stdout, re.M), table.stdout
    anyway = project.compare("--unlike", "--fail", "wall_s:median:+10%")
    assert anyway.returncode == 1, anyway.stdout  # 0.1 s a step instead of 0.01: a real slowdown
    assert "compared anyway (--unlike): 0001_" in anyway.stdout
    assert "FAILED gate wall_s:median:+10%: test_linear.py::test_linear[injected]: wall_s median" in anyway.stdout
