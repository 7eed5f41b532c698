"""pytest hooks and fixtures of mlpbench; the work is done by the session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from pytest_mlpbench import hookspec, workers
from pytest_mlpbench.architectures import Unavailable
from pytest_mlpbench.fixture import MlpBench
from pytest_mlpbench.gates.options import OPTIONS as GATE_OPTIONS
from pytest_mlpbench.gates.plugin import GatePlugin
from pytest_mlpbench.model.workload import WorkloadError
from pytest_mlpbench.options import CORE, OptionSet
from pytest_mlpbench.registry import Registry
from pytest_mlpbench.results.tables import terminal_table
from pytest_mlpbench.results.atomic import ResultsError
from pytest_mlpbench.session import BenchSession
from pytest_mlpbench.sinks.mlflow import MlflowResults
from pytest_mlpbench.sinks.options import OPTIONS as SINK_OPTIONS

MARKERS = {
    "training": "benchmarks of training workloads",
    "inference": "benchmarks of batch-inference workloads",
    "monitor": "benchmarks of mlpbench's own monitor",
    "scaling": "scaling sweeps: chains, fan-outs and hand-offs of growing size",
    "anchors": "published benchmarks reproduced here (the Windmill orchestrator benchmark): docs/anchors.md",
}


def pytest_addhooks(pluginmanager):
    pluginmanager.add_hookspecs(hookspec)


def pytest_addoption(parser, pluginmanager):
    """Every option is known before the command line is read: the core's, the
    gates', the sinks', and those of each architecture and workload, built in,
    from entry points, or registered by a plugin or an early conftest.py."""
    try:
        registry = everything(parser)
    except WorkloadError as exc:
        raise pytest.UsageError(str(exc)) from None
    pluginmanager.register(registry, REGISTRY)
    pluginmanager.hook.pytest_mlpbench_register.call_historic(kwargs={"registry": registry})


REGISTRY = "mlpbench-registry"


def everything(parser=None) -> Registry:
    """The built-in and installed architectures and workloads, with every option
    declared (on ``parser``, if given): the core's, the gates', the sinks' and theirs."""
    options = OptionSet(parser)
    options.add(CORE, "pytest-mlpbench")
    options.add(GATE_OPTIONS, "the gates")
    options.add(SINK_OPTIONS, "the sinks")
    options.add(workers.OPTIONS, "pytest-mlpbench under pytest-xdist")
    registry = Registry.builtin(options)
    registry.add_entry_points()
    return registry


def pytest_configure(config):
    for name, text in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {text}")
    registry = config.pluginmanager.get_plugin(REGISTRY)
    for marker in sorted({w.marker for w in registry.workloads.values()} - set(MARKERS)):
        config.addinivalue_line("markers", f"{marker}: registered workloads")
    settings = registry.options.settings(config)
    config.pluginmanager.register(GatePlugin(config, settings), "mlpbench-gates")
    unknown = [n for n in settings.arch or [] if n not in registry.architectures]
    if unknown:
        raise pytest.UsageError(
            f"--mlpbench-arch: unknown architecture {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(registry.architectures)}"
        )
    results = Path(settings.results)
    if not results.is_absolute():
        results = Path(config.invocation_params.dir) / results
    role = "worker" if workers.is_worker(config) else "controller" if workers.is_controller(config) else None
    if role == "worker":  # its own files; the controller merges them
        results = results / "workers" / config.workerinput["workerid"]
    session = BenchSession(settings, registry, results, role, workers.worker_id(config))
    try:
        session.results.check()
    except ResultsError as exc:
        raise pytest.UsageError(f"--mlpbench-results: {exc}") from None
    config.stash[SESSION] = session
    if role == "worker":
        session.cores = workers.pin_worker(config)
    elif role == "controller":
        config.pluginmanager.register(workers.Controller(config, session), "mlpbench-controller")
    if settings.mlflow_uri and role != "worker":
        config.pluginmanager.register(MlflowResults.checked(config, settings.mlflow_uri, session), "mlpbench-mlflow")


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
        machine_info["mlpbench"] = {"versions": session.versions(), "cpu_count": os.cpu_count(),
                                    "cores": session.worker_cores or sorted(os.sched_getaffinity(0))}
        if session.workers:
            machine_info["mlpbench"]["workers"] = session.workers


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


@pytest.hookimpl(tryfirst=True, specname="pytest_sessionfinish")
def pytest_send_to_controller(session):  # pytest reads only names that start with pytest_
    """A worker's results go to the controller (xdist sends them when its own hook runs)."""
    bench = session.config.stash.get(SESSION, None)
    if bench and bench.role == "worker":
        workers.send_results(session.config, bench)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    """Stop every server and process the architectures started, also after a
    failure or Ctrl-C, and write the session's summaries."""
    bench = session.config.stash.get(SESSION, None)
    if bench:
        bench.close()
        if bench.problems and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
