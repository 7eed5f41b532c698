"""``--mlpbench-mlflow-uri``: every measured run of the session logged to an
MLflow tracking server or store, to browse and compare in MLflow's UI.

One experiment per workload (``mlpbench-<workload>``), one MLflow run per
architecture and round, named ``<architecture> round <n>``: the run record's
figures (and the workload's own metrics) as metrics, the DAG edges' gaps as
``gap_s.<up>.<down>``, the per-step table as ``steps.csv``/``steps.json``, the
session's plots from ``results/`` under ``plots/``, and the versions as tags.
The MLflow run's start and end are the run's own submit and end times.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import urlparse

import pytest

from pytest_mlpbench.measure.record import RunRecord
from pytest_mlpbench.results.writer import to_csv

TELEMETRY_OFF = {"MLFLOW_DISABLE_TELEMETRY": "true"}
STATUS = {"passed": "FINISHED", "failed": "FAILED", "timeout": "FAILED", "interrupted": "KILLED"}


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for a while and put back what was there."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def import_mlflow():
    """Import mlflow with its telemetry off: it decides when first imported,
    so also switch off a client an earlier import may have started."""
    with environ(TELEMETRY_OFF):
        import mlflow
        from mlflow.telemetry import set_telemetry_client

        set_telemetry_client()
    return mlflow


def parse_tracking_uri(text: str) -> str:
    """An MLflow tracking URI: http(s)://host:port, sqlite:///path, file:///path or a directory."""
    parsed = urlparse(text)
    if parsed.scheme in ("http", "https"):
        if not parsed.netloc:
            raise ValueError("expected http://HOST:PORT")
        return text.rstrip("/")
    if parsed.scheme == "sqlite":
        if not text.startswith("sqlite:///") or len(text) == len("sqlite:///"):
            raise ValueError("expected sqlite:///PATH/TO/mlflow.db")
        path = Path(text[len("sqlite:///"):]).absolute()  # a relative path is relative to here
        if not path.parent.is_dir():
            raise ValueError(f"no such directory: {path.parent}")
        return f"sqlite:///{path}"
    if parsed.scheme in ("", "file"):
        path = Path(parsed.path if parsed.scheme else text).expanduser().absolute()
        if not path.parent.is_dir():
            raise ValueError(f"no such directory: {path.parent}")
        return path.as_uri()
    raise ValueError("expected an http(s)://, sqlite:/// or file: URI, or a directory")


def artifact_location(uri: str, experiment: str) -> str | None:
    """Artifacts of a SQLite store go next to its database file; MLflow's default
    would be ``./mlruns`` under whatever directory pytest ran in."""
    if not uri.startswith("sqlite:///"):
        return None  # a server or a file store knows where its artifacts go
    database = Path(uri[len("sqlite:///"):])
    return (database.parent / "mlartifacts" / experiment).as_uri()


def metric_name(text: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces."""
    return re.sub(r"[^\w\-./ ]", ".", text)


class MlflowResults:
    """A pytest plugin object: logs the session's records after the session."""

    def __init__(self, config: pytest.Config, uri: str, session):
        self.config = config
        self.uri = uri
        self.session = session
        self.experiments: dict[str, str] = {}

    @classmethod
    def checked(cls, config: pytest.Config, uri: str, session) -> "MlflowResults":
        """The plugin object, once a server URI answers: better a usage error now
        than an hour of benchmarks whose results cannot be kept."""
        if uri.startswith(("http://", "https://")):
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=10) as response:
                    response.read()
            except OSError as exc:
                raise pytest.UsageError(
                    f"--mlpbench-mlflow-uri={uri}: no MLflow tracking server answers there ({exc}); "
                    "start one with `mlflow server --host 127.0.0.1 --port PORT` or give a sqlite:/// URI"
                ) from None
        return cls(config, uri, session)

    @pytest.hookimpl(wrapper=True)
    def pytest_sessionfinish(self, session):
        # after the harness closed the session: every record is in, plots are written
        result = yield
        records = [r for r in self.session.records if not r.warmup]
        if records:
            self._log_all(records, self.session)
        return result

    def _log_all(self, records, bench) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        try:
            versions = bench.versions()
            for record in records:
                self.log(record, versions, bench.results.dir)
        except Exception as exc:  # the benchmarks ran; say why their results are not in MLflow
            message = f"mlpbench: could not log to MLflow at {self.uri}: {type(exc).__name__}: {exc}"
            if reporter:
                reporter.write_line(message, red=True)
            else:
                raise
            return
        if reporter:
            reporter.write_line(f"mlpbench: logged {len(records)} runs to MLflow at {self.uri}")

    def client(self):
        return import_mlflow().MlflowClient(tracking_uri=self.uri)

    def experiment_id(self, client, workload: str) -> str:
        name = f"mlpbench-{workload}"
        if name not in self.experiments:
            found = client.get_experiment_by_name(name)
            self.experiments[name] = found.experiment_id if found else client.create_experiment(
                name, artifact_location=artifact_location(self.uri, name))
        return self.experiments[name]

    def log(self, record: RunRecord, versions: Mapping[str, str], results_dir: Path) -> str:
        """Log one run record; return the MLflow run id."""
        with environ(TELEMETRY_OFF):
            client = self.client()
            from mlflow.entities import Metric, Param

            tags = {"mlflow.runName": f"{record.architecture} round {record.round}",
                    "mlpbench.architecture": record.architecture, "mlpbench.workload": record.workload,
                    "mlpbench.scale": record.scale, "mlpbench.round": str(record.round),
                    "mlpbench.outcome": record.outcome, "mlpbench.run_id": record.run_id,
                    **{f"version.{k}": v for k, v in versions.items()}}
            if record.error:
                tags["mlpbench.error"] = record.error[:4000]
            run = client.create_run(self.experiment_id(client, record.workload), start_time=record.submit_ns // 10**6,
                                    tags=tags)
            run_id = run.info.run_id
            timestamp = record.end_ns // 10**6
            metrics = [Metric(metric_name(k), float(v), timestamp, 0) for k, v in record.figures().items()]
            metrics += [Metric(metric_name(f"gap_s.{edge.replace('->', '.')}"), float(v), timestamp, 0)
                        for edge, v in record.gaps.items()]
            params = [Param("scale", record.scale), Param("architecture", record.architecture)]
            client.log_batch(run_id, metrics=metrics, params=params, tags=[])
            self._log_artifacts(client, run_id, record, results_dir)
            client.set_terminated(run_id, STATUS.get(record.outcome, "FAILED"), end_time=timestamp)
        return run_id

    def _log_artifacts(self, client, run_id: str, record: RunRecord, results_dir: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="mlpbench-mlflow-") as tmp:
            columns = list(dict.fromkeys(k for row in record.steps for k in row))
            Path(tmp, "steps.csv").write_text(to_csv(record.steps, columns))
            Path(tmp, "steps.json").write_text(json.dumps(record.steps, indent=1))
            client.log_artifacts(run_id, tmp)
        plots = sorted(Path(results_dir).glob("*.png")) if Path(results_dir).is_dir() else []
        for plot in plots:
            client.log_artifact(run_id, str(plot), "plots")
