"""The benchmark session: architectures opened once, runs measured, results kept."""
from __future__ import annotations

import shutil
import signal
import socket
import tempfile
import time
import traceback
import uuid
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from pytest_mlpbench.architectures import Architecture, RunFailed, RunTimeout, Unavailable
from pytest_mlpbench.architectures.base import Run
from pytest_mlpbench.measure.cgroups import Cgroup
from pytest_mlpbench.measure.monitor import Monitor, Sample
from pytest_mlpbench.measure.record import RunRecord, build_record
from pytest_mlpbench.model.workload import RunSpec, Workload, directory_bytes
from pytest_mlpbench.options import AUTO_TIMEOUT_S, Settings
from pytest_mlpbench.registry import Registry
from pytest_mlpbench.results.writer import ResultsWriter
from pytest_mlpbench.step.events import new_traceparent, read_events


VERSIONED = ["torch", "psutil", "pytest-benchmark", "metaflow", "apache-airflow", "kfp", "sagemaker", "mlflow", "dvc"]


class BenchSession:
    def __init__(self, settings: Settings, registry: Registry, results_dir: Path, role: str | None = None,
                 worker: str = ""):
        self.settings = settings
        self.registry = registry
        self.results = ResultsWriter(results_dir)
        self.records: list[RunRecord] = []
        self.problems: list[str] = []  # what went wrong outside any test, shown at the end
        #: Under pytest-xdist: "worker" (records go to the controller) or "controller" (writes the results).
        self.role = role
        self.worker = worker  # this worker's id
        self.host = socket.gethostname()
        self.cores: list[int] = []  # a worker's pinned cores
        self.worker_cores: list[list[int]] = []  # the controller's plan: each local worker's cores
        self.workers: dict[str, dict] = {}  # the controller's: each worker's gateway, executable, host and cores
        self.benchmarks: list[dict] = []  # a worker's benchmarks, for the controller's pytest-benchmark JSON
        self.outbox: list[dict] = []  # a worker's runs, whole, for the controller
        self._architectures: dict[str, Architecture] = {}
        self._unavailable: dict[str, str] = {}
        self._warmed: set[tuple[str, str]] = set()
        self._versions: dict[str, str] = {}
        self._session_dir: Path | None = None
        self.telemetry = None
        self.traced = settings.otel != "none" or bool(settings.otel_file)
        if self.traced and role != "worker":  # a worker's runs are exported by the controller
            from pytest_mlpbench.sinks.telemetry import Telemetry  # OpenTelemetry is imported only when asked for

            self.telemetry = Telemetry.from_settings(settings)

    @property
    def session_dir(self) -> Path:
        """Scratch space for this session's runs, made on first use."""
        if self._session_dir is None:
            self._session_dir = Path(tempfile.mkdtemp(prefix="mlpbench-"))
        return self._session_dir

    def selected(self) -> list[str]:
        return self.settings.arch or list(self.registry.architectures)

    def architecture(self, name: str) -> Architecture:
        """The opened architecture, or :class:`Unavailable` with the reason.

        One architecture is open at a time (benchmarks are ordered by
        architecture), so the servers of one are never charged to another."""
        if name in self._unavailable:
            raise Unavailable(self._unavailable[name])
        if name not in self._architectures:
            self.close_architectures()
            try:
                arch = self.registry.architectures[name].load()(self.settings)
                arch.check()
                arch_dir = self.session_dir / name
                arch_dir.mkdir(parents=True, exist_ok=True)
                self._architectures[name] = arch  # registered first, so close() runs even if open() fails
                arch.open(arch_dir)
                self._versions.update(arch.versions())
            except Unavailable as exc:
                self._unavailable[name] = str(exc)
                opened = self._architectures.pop(name, None)
                if opened:  # open() found it cannot run: stop what it started
                    opened.close()
                raise
        return self._architectures[name]

    def versions(self) -> dict[str, str]:
        """Versions of the libraries and frameworks installed, and of those the opened architectures ran."""
        found = {}
        for dist in VERSIONED:
            try:
                found[dist] = metadata.version(dist)
            except metadata.PackageNotFoundError:
                pass
        return {**found, **self._versions}

    def run_timeout_s(self) -> float | None:
        """``--mlpbench-timeout``, with ``auto`` resolved by scale."""
        limit = self.settings.timeout
        return AUTO_TIMEOUT_S[self.settings.scale] if limit == "auto" else limit

    def warm_up(self, arch: Architecture, workload: Workload, params: dict) -> None:
        """One unrecorded run for architectures whose first run after start is unrepresentative."""
        key = (arch.name, workload.name)
        if arch.needs_warmup and key not in self._warmed:
            self._warmed.add(key)
            self.run_once(arch, workload, round=-1, warmup=True, params=params)

    def run_once(self, arch: Architecture, workload: Workload, round: int, warmup: bool, params: dict) -> RunRecord:
        """Start, execute and finish one run (warm-ups, and rounds that pytest-benchmark does not time)."""
        live = self.start_run(arch, workload, round, warmup, params)
        try:
            live.execute()
        finally:
            record = self.finish_run(live)
        return record

    def start_run(self, arch: Architecture, workload: Workload, round: int, warmup: bool, params: dict) -> "LiveRun":
        """Prepare a run and start its monitor; :meth:`LiveRun.execute` is then exactly the architecture's run."""
        run_id = f"{arch.name}-{workload.name}-{uuid.uuid4().hex[:8]}"
        run_dir = self.session_dir / "runs" / run_id
        (run_dir / "artifacts").mkdir(parents=True)
        spec = RunSpec(
            workload=workload.ref,
            scale=self.settings.scale,
            run_id=run_id,
            artifacts=str(run_dir / "artifacts"),
            events=str(run_dir / "events.jsonl"),
            params={"data_dir": self.settings.data_dir, **option_params(self.settings, workload), **params},
            traceparent=new_traceparent() if self.traced else None,
            handoff=arch.handoff(workload),
        )
        monitor = Monitor(self.settings.sample_interval)
        for pid in arch.watch_pids():
            monitor.watch(pid)
        for path in arch.watch_cgroups(run_id):
            monitor.watch_cgroup(Cgroup(path))
        monitor.start()
        run = Run(spec=spec, workload=workload, dir=run_dir, timeout_s=self.run_timeout_s())
        return LiveRun(arch, workload, run, monitor, round, warmup)

    def finish_run(self, live: "LiveRun") -> RunRecord:
        """Stop the run's monitor, build its record and write it, whatever the outcome."""
        usage = live.monitor.stop()
        spec = live.run.spec
        events = read_events(spec.events, spec.run_id)
        record = build_record(
            run_id=spec.run_id,
            architecture=live.arch.name,
            workload=live.workload,
            scale=self.settings.scale,
            params={**live.workload.scales.get(spec.scale, {}), **spec.params},
            round=live.round,
            warmup=live.warmup,
            submit_ns=live.submit_ns,
            wall_ns=live.wall_ns,
            events=events,
            usage=usage,
            artifact_bytes=directory_bytes(spec.artifacts),
            task_info=live.run.task_info,
            outcome=live.outcome,
            error=live.error,
        )
        record.cores, record.host, record.worker = self.cores, self.host, self.worker
        record.handoff = live.arch.handoff_used(spec.handoff)
        self.records.append(record)
        if self.telemetry:
            self.telemetry.add_run(record, events, usage.samples, spec.traceparent)
        if self.role == "worker":
            self.outbox.append({"record": record.to_dict(), "samples": [asdict(s) for s in usage.samples],
                                "events": events, "traceparent": spec.traceparent})
        try:
            self.results.add(record, usage.samples)
            if self.settings.keep_artifacts:
                self.results.keep_artifacts(record.run_id, spec.artifacts)
        except OSError as exc:
            raise RunFailed(f"{record.run_id}: measured, but its results were not saved: {exc}") from None
        return record

    def close_architectures(self) -> None:
        while self._architectures:
            _, arch = self._architectures.popitem()
            arch.close()
        self._warmed.clear()  # a reopened architecture warms up again

    def add_worker_run(self, run: dict) -> None:
        """The controller's side of a run a worker measured: kept, written and exported as if measured here."""
        record = RunRecord(**run["record"])
        samples = [Sample(**s) for s in run["samples"]]
        self.records.append(record)
        if self.telemetry and run["traceparent"]:
            self.telemetry.add_run(record, run["events"], samples, run["traceparent"])
        try:
            self.results.add(record, samples)
        except OSError as exc:
            self.problems.append(f"{record.run_id}: measured on worker {record.worker}, but not saved: {exc}")

    def add_worker_line(self, line: dict) -> None:
        """A run that a worker which then died wrote to its own runs.jsonl (its series stays there)."""
        self.records.append(RunRecord(**{k: v for k, v in line.items() if k != "series"}))
        try:
            self.results.add_line(line)
        except OSError as exc:
            self.problems.append(f"{line['run_id']}: measured on worker {line.get('worker')}, but not saved: {exc}")

    def close(self) -> None:
        self.close_architectures()
        if self.telemetry:
            self.telemetry.shutdown()
        try:
            if self.role != "worker":  # the controller writes the summaries of every worker's runs
                self.results.write_summaries(self.records)
        except OSError as exc:
            self.problems.append(f"the session's summaries were not written: {exc}")
        if self._session_dir:
            shutil.rmtree(self._session_dir, ignore_errors=True)
            self._session_dir = None


def option_params(settings: Settings, workload: Workload) -> dict:
    """The scale parameters of ``workload`` that its options set; unset ones keep the scale's value."""
    return {opt.param: settings.get(opt.name) for opt in workload.options if settings.get(opt.name) is not None}


class LiveRun:
    """A run between its start and its finish: :meth:`execute` is the part that is timed."""

    def __init__(self, arch: Architecture, workload: Workload, run: Run, monitor: Monitor, round: int, warmup: bool):
        self.arch, self.workload, self.run, self.monitor = arch, workload, run, monitor
        self.round, self.warmup = round, warmup
        self.outcome, self.error = "interrupted", "interrupted before it was submitted"
        self.submit_ns = time.time_ns()  # wall clock: aligns the steps' own timestamps
        self.wall_ns = 0  # monotonic duration of execute()

    def execute(self) -> None:
        """The architecture's run, nothing else: pytest-benchmark times this call."""
        self.submit_ns = time.time_ns()
        start = time.perf_counter_ns()
        try:
            with _sigterm_as_interrupt():
                self.arch.run(self.workload, self.run)
            self.outcome, self.error = "passed", None
        except RunTimeout as exc:
            self.outcome, self.error = "timeout", str(exc)
        except (RunFailed, Unavailable) as exc:
            self.outcome, self.error = "failed", str(exc)
        except BaseException as exc:
            self.outcome = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            self.error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            raise
        finally:
            self.wall_ns = time.perf_counter_ns() - start


class _sigterm_as_interrupt:
    """Turn SIGTERM into KeyboardInterrupt while a run is under way, so a
    killed benchmark still records the run and stops what it started."""

    def __enter__(self):
        try:
            self._old = signal.signal(signal.SIGTERM, self._raise)
        except ValueError:  # not the main thread
            self._old = None

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    @staticmethod
    def _raise(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
