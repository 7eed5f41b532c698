"""The package's layout: no import cycles, a light step entry point, and
architectures and workloads that bring their own options, from a conftest or
an installed package."""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import pytest_mlpbench
from pytest_mlpbench.model.workload import RunSpec
from pytest_mlpbench.step import __main__ as step_main

PACKAGE = Path(pytest_mlpbench.__file__).parent
TESTS = Path(__file__).parent
ROOT = TESTS.parent


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = ["pytest_mlpbench", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules that ``name`` imports anywhere in its code (lazy
    imports too), except under ``if TYPE_CHECKING``."""
    tree = ast.parse(path.read_text())
    skipped = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
               and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for succ in graph[node]:
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles():
    known = modules()
    graph = {name: imports(name, path, set(known)) for name, path in known.items()}
    # a package's __init__ re-exporting its own submodules is not a cycle of the layout
    graph = {name: {t for t in targets if not t.startswith(name + ".")} for name, targets in graph.items()}
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]  # the check can fail


def test_every_module_imports_in_a_fresh_interpreter():
    names = sorted(n for n in modules() if not n.endswith("__main__"))  # those run on import
    script = textwrap.dedent("""
        import importlib, json, sys
        failed = {}
        for name in json.loads(sys.argv[1]):
            try:
                importlib.import_module(name)
            except Exception as exc:
                failed[name] = repr(exc)
        print(json.dumps(failed))
    """)
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}  # the SageMaker SDK needs one at import
    done = subprocess.run([sys.executable, "-c", script, json.dumps(names)], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {}


HEAVY = ["pytest", "_pytest", "pluggy", "airflow", "metaflow", "kfp", "sagemaker", "mlflow", "dvc", "boto3",
         "docker", "torch", "opentelemetry", "matplotlib", "psutil"]


def test_the_step_entry_point_is_light():
    script = ("import sys, json, pytest_mlpbench.step, pytest_mlpbench.step.params; "
              "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in json.loads(sys.argv[1]))))")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(HEAVY)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []


def test_the_step_entry_point_says_what_is_wrong(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pytest_mlpbench.step", "--spec", "{}", "--step", "x"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "one of the arguments --outputs --out-dir is required" in done.stderr


#: What a light task's process would spend most of its own time importing (docs/handwritten.md).
SLOW_TO_IMPORT = ["argparse", "dataclasses", "inspect", "typing", "shutil"]


def test_a_light_task_imports_nothing_slow(tmp_path):
    spec = RunSpec("workloads.scaling:chain_2", "smoke", "r1", str(tmp_path / "art"), str(tmp_path / "events.jsonl"))
    (tmp_path / "t000.json").write_text("{}")
    argv = ["step", "--spec", spec.to_json(), "--step", "t001", f"--upstream=t000={tmp_path / 't000.json'}",
            "--outputs", str(tmp_path / "t001.json")]
    script = ("import atexit, json, runpy, sys; slow = json.loads(sys.argv[1]); sys.argv = json.loads(sys.argv[2]); "
              "atexit.register(lambda: print(json.dumps(sorted(set(sys.modules) & set(slow))))); "
              "runpy.run_module('pytest_mlpbench.step', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", script, json.dumps(SLOW_TO_IMPORT), json.dumps(argv)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [] and json.loads((tmp_path / "t001.json").read_text()) == {}


@pytest.mark.parametrize("argv", [
    ["--spec", "s.json", "--step", "t001", "--upstream=t000=out/t000.json", "--outputs", "out/t001.json"],
    ["--spec={}", "--step", "b", "--index", "3", "--upstream", "a=x", "--upstream", "a=y", "--out-dir", "o",
     "--env", '{"A": "1"}', "--artifacts", "art", "--events", "ev", "--carried", "a.0=d", "--with-events"],
    ["--spec", "{}", "--step", "s", "--upstream-json", '{"a": {}}', "--outputs", "o", "--fanout-key", "shards"],
])
def test_the_step_reads_its_arguments_as_argparse_does(argv):
    assert vars(step_main.parse_args(argv)) == vars(step_main.parser().parse_args(argv))


@pytest.mark.parametrize("argv", [["--step", "s", "--outputs", "o"], ["--spec", "{}", "--step", "s"],
                                  ["--spec", "{}", "--step", "s", "--outputs", "o", "--index", "one"],
                                  ["--spec", "{}", "--step", "s", "--outputs", "o", "--nope", "1"]])
def test_wrong_step_arguments_are_argparse_errors(argv, capsys):
    with pytest.raises(SystemExit) as exited:
        step_main.parse_args(argv)
    assert exited.value.code == 2 and "error:" in capsys.readouterr().err


CONFTEST = '''
from pytest_mlpbench import Architecture
from pytest_mlpbench.options import Option, positive_int
from pytest_mlpbench.step import run_step


class Repeat(Architecture):
    """Runs every step in this process, each step ``--mlpbench-repeat-times`` times."""

    name = "repeat"
    options = [Option("repeat_times", "How often repeat runs each step (default: 1).", positive_int, 1, "N")]

    def run(self, workload, run):
        outputs = {}
        for step in workload.steps:
            for _ in range(self.settings.repeat_times):
                outputs[step.name] = run_step(run.spec, step.name, outputs, workload=workload)
            run.add_task_info(step.name, None, repeats=self.settings.repeat_times)


def pytest_mlpbench_register(registry):
    registry.add_architecture("repeat", Repeat)
'''

BENCHMARK = '''
def test_linear(mlpbench):
    (record,) = mlpbench.run("linear", sleep_s=0.0)
    assert record.outcome == "passed"
    assert [(s["step"], s["repeats"]) for s in record.steps] == [("begin", 2), ("middle", 2), ("end", 2)]
'''


def test_an_architecture_from_a_conftest_brings_its_own_option(pytester):
    pytester.makeconftest(CONFTEST + '    registry.add_workload("fakes:LINEAR")\n')
    pytester.makepyfile(test_repeat=BENCHMARK)
    pytester.syspathinsert(TESTS)
    help_text = pytester.runpytest("--help").stdout.str()
    assert "--mlpbench-repeat-times=N" in help_text and "How often repeat runs each step" in help_text
    result = pytester.runpytest("--mlpbench-arch=repeat", "--mlpbench-repeat-times=2", "--mlpbench-rounds=1",
                                "--mlpbench-warmup=0", "--benchmark-disable", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    bad = pytester.runpytest("--mlpbench-arch=repeat", "--mlpbench-repeat-times=0", "-p", "no:cacheprovider")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    bad.stderr.fnmatch_lines(["*--mlpbench-repeat-times='0': expected a whole number of 1 or more*"])


def test_an_option_declared_twice_differently_is_a_usage_error(pytester):
    pytester.makeconftest('''
from pytest_mlpbench import Architecture
from pytest_mlpbench.options import Option


class Clash(Architecture):
    name = "clash"
    options = [Option("rounds", "Not the rounds you know.")]


def pytest_mlpbench_register(registry):
    registry.add_architecture("clash", Clash)
''')
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*architecture 'clash' declares option --mlpbench-rounds, which "
                                 "pytest-mlpbench already declares differently*"])


def test_an_installed_package_brings_architectures_and_workloads_by_entry_points(pytester, tmp_path):
    site = tmp_path / "site"
    (site / "shipped_bench").mkdir(parents=True)
    (site / "shipped_bench" / "__init__.py").write_text(
        CONFTEST.replace("def pytest_mlpbench_register(registry):\n    registry.add_architecture(\"repeat\", Repeat)\n", "")
        + "\nfrom fakes import LINEAR as WORKLOAD\n")
    dist = site / "shipped_bench-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: shipped-bench\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[mlpbench.architectures]\nrepeat = shipped_bench:Repeat\n\n"
                                           "[mlpbench.workloads]\nlinear = shipped_bench:WORKLOAD\n")
    pytester.makepyfile(test_repeat=BENCHMARK)
    env = os.pathsep.join([str(site), str(TESTS), os.environ.get("PYTHONPATH", "")])
    pytester._monkeypatch.setenv("PYTHONPATH", env)
    help_text = pytester.runpytest_subprocess("--help").stdout.str()
    assert "--mlpbench-repeat-times=N" in help_text
    result = pytester.runpytest_subprocess("--mlpbench-arch=repeat", "--mlpbench-repeat-times=2",
                                           "--mlpbench-rounds=1", "--mlpbench-warmup=0", "--benchmark-disable",
                                           "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_mlpbench_command():
    command = shutil.which("mlpbench", path=str(Path(sys.executable).parent))
    assert command, "the console script is installed with the package"
    done = subprocess.run([command], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "usage: mlpbench {report,compare,history}" in done.stderr
    for sub in ("report", "compare", "history"):
        done = subprocess.run([command, sub, "--help"], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    same = subprocess.run([sys.executable, "-m", "pytest_mlpbench"], capture_output=True, text=True, timeout=60)
    assert same.returncode == 2 and "usage: mlpbench" in same.stderr


def test_the_readme_example_of_your_own_architecture_runs(pytester):
    readme = (TESTS.parent / "README.md").read_text()
    section = readme[readme.index("## Your own architectures and workloads"):]
    example = section[section.index("```python") + len("```python"):section.index("```\n", section.index("```python"))]
    pytester.makeconftest(example)
    pytester.makepyfile(test_mine='''
def test_mine(mlpbench):
    (record,) = mlpbench.run("mine")
    assert record.outcome == "passed" and record.params["n"] == 3
    assert mlpbench.session.architecture("my-runner").settings.my_workers == 4
''')
    help_text = pytester.runpytest_subprocess("--help").stdout.str()
    assert "--mlpbench-my-workers=N" in help_text and "--mlpbench-mine-n=N" in help_text
    result = pytester.runpytest_subprocess("--mlpbench-arch=my-runner", "--mlpbench-my-workers=4", "--mlpbench-mine-n=3",
                                "--mlpbench-rounds=1", "--mlpbench-warmup=0", "--benchmark-disable",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_repository_conftest_registers_the_hand_written_comparisons_chain():
    repo = TESTS.parent
    done = subprocess.run([sys.executable, "-m", "pytest", "benchmarks", "-m", "handwritten", "--collect-only", "-q",
                           "--mlpbench-arch=inprocess,subprocess", "-p", "no:cacheprovider"],
                          cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    collected = [line for line in done.stdout.splitlines() if "::" in line]
    assert collected == [f"benchmarks/test_workloads.py::test_workload[chain-20-{arch}]" for arch in ("inprocess", "subprocess")]
    assert "PytestUnknownMarkWarning" not in done.stdout, "a registered workload's marker is declared"


def test_the_readme_headline_is_the_committed_reference_run():
    """Its rows are the reference summary's own, and its plot is there: rerunning
    ``make reference`` without updating the README fails here."""
    readme = (ROOT / "README.md").read_text()
    source = re.search(r"<!-- headline: (results/reference/[^/]+/summary\.md) -->", readme)
    assert source, "the README names the reference summary its headline comes from"
    headline = readme[source.end():readme.index("<!-- /headline -->")]
    summary = (ROOT / source[1]).read_text().splitlines()
    rows = [line for line in headline.splitlines() if line.startswith("| ") and not line.startswith("| architecture")]
    assert len(rows) >= 2 and [row for row in rows if row not in summary] == []
    plots = re.findall(r"\]\((results/reference/[^)]+\.png)\)", headline)
    assert plots and all((ROOT / plot).is_file() for plot in plots)
