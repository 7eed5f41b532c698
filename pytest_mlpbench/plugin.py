"""pytest hooks and fixtures of mlpbench; the work is done by the session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from . import hooks
from .architectures import Unavailable
from .fixture import MlpBench
from .gates_plugin import GatePlugin
from .mlflow_results import MlflowResults
from .options import Settings, add_options
from .registry import Registry
from .report import ResultsError, terminal_table
from .session import BenchSession

MARKERS = {
    "training": "benchmarks of training workloads",
    "inference": "benchmarks of batch-inference workloads",
    "monitor": "benchmarks of mlpbench's own monitor",
}


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(hooks)


def pytest_addoption(parser):
    add_options(parser)


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    settings = Settings.from_config(config)
    config.pluginmanager.register(GatePlugin(config, settings), "mlpbench-gates")
    if settings.mlflow_uri:
        config.pluginmanager.register(MlflowResults.checked(config, settings.mlflow_uri), "mlpbench-mlflow")
    registry = Registry.builtin()
    config.hook.pytest_mlpbench_register(registry=registry)
    unknown = [n for n in settings.arch or [] if n not in registry.architectures]
    if unknown:
        raise pytest.UsageError(
            f"--mlpbench-arch: unknown architecture {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(registry.architectures)}"
        )
    results = Path(settings.results)
    if not results.is_absolute():
        results = Path(config.invocation_params.dir) / results
    session = BenchSession(settings, registry, results)
    try:
        session.results.check()
    except ResultsError as exc:
        raise pytest.UsageError(f"--mlpbench-results: {exc}") from None
    config.stash[SESSION] = session


SESSION = pytest.StashKey[BenchSession]()


def pytest_generate_tests(metafunc):
    session = metafunc.config.stash[SESSION]
    if "mlpbench_workload" in metafunc.fixturenames:
        extra = [w for w in session.registry.workloads.values() if not w.builtin]
        metafunc.parametrize(
            "mlpbench_workload",
            [pytest.param(w.name, id=w.name, marks=getattr(pytest.mark, w.marker)) for w in extra],
        )
    if "mlpbench" in metafunc.fixturenames:
        metafunc.parametrize("mlpbench_arch", session.selected(), indirect=True)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Drop the registered-workloads suite when none is registered (not a
    skip), and order benchmarks by architecture, so that each architecture's
    servers run only while its own benchmarks do."""
    empty = [i for i in items if "mlpbench_workload" in getattr(i, "fixturenames", ()) and not hasattr(i, "callspec")]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [i for i in items if i not in empty]
    order = {name: n for n, name in enumerate(config.stash[SESSION].selected())}
    items.sort(key=lambda item: order.get(getattr(item, "callspec", None) and item.callspec.params.get("mlpbench_arch"), -1))


@pytest.fixture
def mlpbench_arch(request):
    """The architecture name of this benchmark (parametrized by the plugin)."""
    return request.param


@pytest.fixture
def mlpbench(request, benchmark, mlpbench_arch):
    """Runs a workload on this benchmark's architecture: ``mlpbench.run("training")``."""
    session = request.config.stash[SESSION]
    try:
        session.architecture(mlpbench_arch)
    except Unavailable as exc:
        pytest.skip(str(exc))
    return MlpBench(session, mlpbench_arch, benchmark, request.config)


def pytest_benchmark_update_machine_info(config, machine_info):
    session = config.stash.get(SESSION, None)
    if session:
        machine_info["mlpbench"] = {"versions": session.versions(), "cpu_count": os.cpu_count()}


def pytest_terminal_summary(terminalreporter, config):
    session = config.stash.get(SESSION, None)
    if session and session.records:
        terminalreporter.write_sep("-", "mlpbench: medians per architecture")
        for line in terminal_table(session.records):
            terminalreporter.write_line(line)
        terminalreporter.write_line(f"results: {session.results.dir}")
    for problem in session.problems if session else ():
        terminalreporter.write_line(f"mlpbench: {problem}", red=True, bold=True)
    if session and session.telemetry:  # shut down (flushed) by pytest_sessionfinish, which runs first
        terminalreporter.write_sep("-", f"mlpbench: {session.telemetry.summary()}")
        terminalreporter.write(session.telemetry.console_text())


def pytest_runtest_teardown(item):
    bench = item.config.stash.get(SESSION, None)
    if bench and bench.telemetry:
        bench.telemetry.flush()  # between tests, never while a run is measured


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """Stop every server and process the architectures started, also after a
    failure or Ctrl-C, and write the session's summaries."""
    bench = session.config.stash.get(SESSION, None)
    if bench:
        bench.close()
        if bench.problems and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
