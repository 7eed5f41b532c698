"""The plugin's options: one definition each, shared by the command line and
the ini file, and one resolver that turns them into checked settings."""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from .gates import parse_gate, significance_level
from .mlflow_results import parse_tracking_uri
from .workload import SCALES


def _number(text: str, kind: type, low: float, inclusive: bool, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"expected {what}") from None
    if not math.isfinite(value) or value < low or (value == low and not inclusive):
        raise ValueError(f"expected {what}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 1, True, "a whole number of 1 or more")


def non_negative_int(text: str) -> int:
    return _number(text, int, 0, True, "a whole number of 0 or more")


def positive_float(text: str) -> float:
    return _number(text, float, 0, False, "a number of seconds greater than 0")


#: The default per-run time limit, by scale: far above any run measured here at that scale,
#: so that a hung run fails instead of holding CI until its own limit.
AUTO_TIMEOUT_S = {"smoke": 600.0, "small": 1800.0, "full": 4 * 3600.0}


def timeout(text: str) -> float | str | None:
    """Seconds, ``auto`` (by scale) or ``none``/``0`` (no limit)."""
    word = text.lower()
    if word == "auto":
        return word
    if word in ("none", "0"):
        return None
    return _number(text, float, 0, False, "a number of seconds greater than 0, auto, or none")


def choice(*valid: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in valid:
            raise ValueError(f"valid values are {', '.join(valid)}")
        return text

    return parse


def yes_no(text: str) -> bool:
    if text.lower() not in ("yes", "no", "true", "false", "1", "0"):
        raise ValueError("expected yes or no")
    return text.lower() in ("yes", "true", "1")


def names(text: str) -> list[str]:
    found = [n.strip() for n in text.split(",") if n.strip()]
    if not found:
        raise ValueError("expected a comma-separated list of names")
    return found


def existing_dir(text: str) -> str:
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isdir(path):
        raise ValueError(f"no such directory: {path}")
    return path


def new_file(text: str) -> str:
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"no such directory: {os.path.dirname(path)}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory")
    return path


def _airflow_db(text: str) -> str | None:
    if text == "sqlite":
        return None
    scheme, sep, rest = text.partition("://")
    if scheme.split("+")[0] != "postgresql" or not sep or not rest or " " in text:
        raise ValueError("expected 'sqlite' or postgresql://USER:PASSWORD@HOST:PORT/DATABASE")
    return text


def _airflow_settings(text: str) -> dict[str, str]:
    from .architectures.airflow.server import parse_settings  # no Airflow import: plain parsing

    return parse_settings(text)


@dataclass(frozen=True)
class Option:
    name: str  # --mlpbench-NAME on the command line, mlpbench_NAME in the ini file
    help: str
    parse: Callable[[str], Any] = str
    default: Any = None
    metavar: str | None = None
    #: Repeatable on the command line, one value a line in the ini file; the
    #: setting is then the list of parsed values (default: empty).
    multiple: bool = False

    @property
    def flag(self) -> str:
        return "--mlpbench-" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return "mlpbench_" + self.name


OPTIONS = [
    Option("arch", "Architectures to run, comma-separated (default: every registered one; "
           "those that cannot run here are skipped with the reason).", names, None, "NAMES"),
    Option("scale", "Workload size: smoke, small or full (default: small).", choice(*SCALES), "small", "SCALE"),
    Option("rounds", "Measured runs per benchmark (default: 3).", positive_int, 3, "N"),
    Option("warmup", "Unrecorded runs before the measured ones (default: 1).", non_negative_int, 1, "N"),
    Option("sample_interval", "Seconds between samples of the process tree (default: 0.1).",
           positive_float, 0.1, "SECONDS"),
    Option("results", "Directory for run records, CSV, summary and plots (default: results).", str, "results", "DIR"),
    Option("timeout", "Seconds one run may take before its processes are killed and it is recorded as timed "
           "out; 'none' (or 0) for no limit (default: auto, by scale: " +
           ", ".join(f"{s:g} s {scale}" for scale, s in AUTO_TIMEOUT_S.items()) + ").",
           timeout, "auto", "SECONDS|auto|none"),
    Option("data_dir", "Directory with real data for the workloads, e.g. a CIFAR-10 "
           "'cifar-10-batches-py' directory (default: generated data).", existing_dir, None, "DIR"),
    Option("keep_artifacts", "Keep every run's artifacts (data, models, captions) under "
           "RESULTS/artifacts/RUN_ID (default: no).", yes_no, False, "yes|no"),
    # -- options of the framework architectures follow, one block per framework --
    # -- metaflow options --
    Option("metaflow_max_workers", "Tasks Metaflow runs at once, its run --max-workers "
           "(default: Metaflow's own, 16).", positive_int, None, "N"),
    Option("metaflow_s3_root", "S3 datastore root of metaflow-kubernetes and metaflow-batch, e.g. "
           "s3://bucket/metaflow (default: Metaflow's METAFLOW_DATASTORE_SYSROOT_S3).", str, None, "S3URI"),
    Option("metaflow_image", "Container image of the remote Metaflow tasks; it must have pytest-mlpbench and "
           "the workloads installed (default: Metaflow's METAFLOW_KUBERNETES_CONTAINER_IMAGE or "
           "METAFLOW_BATCH_CONTAINER_IMAGE).", str, None, "IMAGE"),
    Option("metaflow_kube_context", "kubeconfig context of metaflow-kubernetes (default: the current "
           "context of $KUBECONFIG or ~/.kube/config).", str, None, "NAME"),
    Option("metaflow_kube_namespace", "Kubernetes namespace of metaflow-kubernetes (default: Metaflow's "
           "METAFLOW_KUBERNETES_NAMESPACE, else default).", str, None, "NAME"),
    Option("metaflow_batch_queue", "AWS Batch job queue of metaflow-batch (default: Metaflow's "
           "METAFLOW_BATCH_JOB_QUEUE).", str, None, "QUEUE"),
    # -- airflow options --
    Option("airflow_db", "Airflow metadata database for airflow-local/-kubernetes: 'sqlite' (default, a file in "
           "the session's AIRFLOW_HOME) or a SQLAlchemy URL postgresql://USER:PASSWORD@HOST:PORT/DB "
           "(needs psycopg[binary] and asyncpg).", _airflow_db, None, "URL"),
    Option("airflow_config", "Extra Airflow settings, comma-separated section.key=value, e.g. "
           "'scheduler.scheduler_idle_sleep_time=1' (they override the tuned defaults).",
           _airflow_settings, None, "SETTINGS"),
    Option("airflow_kube_context", "Kube context (of $KUBECONFIG or ~/.kube/config) in which airflow-kubernetes "
           "runs its pods (default: none, airflow-kubernetes is skipped).", str, None, "CONTEXT"),
    Option("airflow_kube_namespace", "Namespace of airflow-kubernetes' pods (default: default).",
           str, "default", "NAMESPACE"),
    Option("airflow_kube_image", "Container image for airflow-kubernetes' pods, with pytest-mlpbench and the "
           "workloads installed (required with --mlpbench-airflow-kube-context).", str, None, "IMAGE"),
    Option("airflow_kube_volume", "PersistentVolumeClaim mounted at /mlpbench in every pod of airflow-kubernetes, "
           "for the artifacts steps pass on (required with --mlpbench-airflow-kube-context).", str, None, "PVC"),
    # -- kubeflow and sagemaker options --
    Option("kubeflow_host", "KFP API endpoint for the kubeflow architecture, e.g. http://127.0.0.1:8888 "
           "(default: $KF_PIPELINES_ENDPOINT; without one, kubeflow is skipped).", str, None, "URL"),
    Option("kubeflow_image", "Container image of the kubeflow tasks; it must have pytest-mlpbench and the "
           "workloads installed (required for kubeflow).", str, None, "IMAGE"),
    Option("kubeflow_artifacts", "Directory that every kubeflow task pod mounts, for the workloads' "
           "artifacts (required for kubeflow).", str, None, "DIR"),
    Option("kubeflow_namespace", "Kubernetes namespace of the KFP runs (default: kubeflow).", str, None, "NAME"),
    Option("kubeflow_experiment", "KFP experiment of the runs (default: mlpbench).", str, "mlpbench", "NAME"),
    Option("sagemaker_role", "IAM role ARN the SageMaker pipeline and its jobs run as "
           "(default: $SAGEMAKER_ROLE_ARN; required for sagemaker).", str, None, "ARN"),
    Option("sagemaker_s3_root", "S3 prefix for the SageMaker runs' code, inputs and artifacts, "
           "e.g. s3://bucket/mlpbench (default: $SAGEMAKER_S3_ROOT; required for sagemaker).", str, None, "S3URI"),
    Option("sagemaker_region", "AWS region of the SageMaker pipeline (default: the standard AWS "
           "configuration: $AWS_REGION, $AWS_DEFAULT_REGION, ~/.aws/config).", str, None, "REGION"),
    Option("sagemaker_image", "Container image (ECR URI) of the SageMaker steps; it must have "
           "pytest-mlpbench and the workloads installed (required for sagemaker).", str, None, "URI"),
    Option("sagemaker_instance_type", "Instance type of the SageMaker steps (default: ml.m5.large).",
           str, "ml.m5.large", "TYPE"),
    Option("remote_poll", "Seconds between status polls of a kubeflow or sagemaker run (default: 2).",
           positive_float, 2.0, "SECONDS"),
    # -- container options --
    Option("container_engine", "Container engine of kubeflow-docker and sagemaker-local: auto (the user's Docker "
           "engine where $DOCKER_HOST or /var/run/docker.sock answers, else a Podman API service started for the "
           "session), docker or podman (default: auto).", choice("auto", "docker", "podman"), "auto", "ENGINE"),
    Option("docker_host", "Docker API endpoint for the container architectures, e.g. unix:///var/run/docker.sock "
           "(default: $DOCKER_HOST, then the default socket).", str, None, "URL"),
    Option("container_image", "Image of the container architectures' steps, with python3, kfp and "
           "pytest-mlpbench and the workloads (default: one built locally from Debian, cached).", str, None, "IMAGE"),
    Option("container_torch", "Put torch in the locally built image, for the real workloads: yes, no, or auto "
           "(when torch is installed here; default).", choice("auto", "yes", "no"), "auto", "WHEN"),
    Option("image_cache", "Directory of the locally built images, reused between sessions by content hash "
           "(default: ~/.cache/mlpbench).", str, None, "DIR"),
    # -- dvc and mlflow options --
    Option("mlflow_uri", "Log every measured run to MLflow: a tracking server http://HOST:PORT, a store "
           "sqlite:///PATH.db, or a directory (one experiment per workload, one MLflow run per architecture "
           "and round, the figures as metrics, the per-step table and plots as artifacts).",
           parse_tracking_uri, None, "URI"),
    Option("mlflow_fanout", "How the mlflow architecture runs the tasks of a fan-out step: concurrent "
           "(mlflow.projects.run(synchronous=False): one `mlflow run` process per task, side by side) or serial "
           "(synchronous=True, one after another) (default: concurrent).",
           choice("concurrent", "serial"), "concurrent", "MODE"),
    # -- captioning and report options --
    Option("caption_model", "Local Hugging Face image-to-text checkpoint directory for the captioning "
           "workload, used instead of the default captioner; needs 'transformers', nothing is downloaded "
           "(default: the project's small CNN+GRU captioner).", existing_dir, None, "DIR"),
    Option("caption_images", "Images the captioning workload captions (default: by scale, "
           "64 / 1000 / 10000 for smoke / small / full).", positive_int, None, "N"),
    Option("caption_shards", "Shards the captioning workload fans out over, one task each (default: by "
           "scale, 2 / 4 / 8).", positive_int, None, "N"),
    # -- gate options --
    # -- telemetry options --
    Option("otel", "OpenTelemetry export of a trace per run (a span per run and per step attempt) and metrics "
           "(process.cpu.time, process.memory.usage, process.disk.io, run-record histograms): none (default), "
           "console (printed at the end) or otlp (endpoint, protocol http/protobuf or grpc, headers from the "
           "standard OTEL_EXPORTER_OTLP_* variables).", choice("none", "console", "otlp"), "none", "EXPORTER"),
    Option("otel_file", "Also write the spans and metrics to FILE as OTLP JSON lines, for offline use "
           "(the format of the OpenTelemetry Collector's file exporter).", new_file, None, "FILE"),
    Option("fail", "Regression gate METRIC:STAT:THRESHOLD on any figure of the run record, repeatable, e.g. "
           "overhead_s:median:+20%, peak_rss_bytes:max:+10%, accuracy:min:-0.01 (STAT: min, median, mean, max; "
           "THRESHOLD: +N% or +N allowed increase, -N% or -N allowed decrease). Fails only on a significant "
           "change against the saved pytest-benchmark history.", parse_gate, None, "METRIC:STAT:THRESHOLD",
           multiple=True),
    Option("baseline", "Saved run to gate against: number, save name or file path (default: the latest "
           "saved run in --benchmark-storage for this machine).", str, None, "RUN"),
    Option("history", "Pool the per-round values of the N latest saved runs as the baseline (default: 1).",
           positive_int, 1, "N"),
    Option("alpha", "Significance level of the gates' one-sided rank test (default: 0.05).",
           significance_level, 0.05, "P"),
    Option("compare_unlike", "Gate also against saved runs that differ from this one in workload, scale, workload "
           "parameters, data source or machine, or that predate their recording, saying how (default: no: those "
           "are left out and a benchmark without a like baseline passes as new, with the reason).",
           yes_no, False, "yes|no"),
]


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlpbench", "mlpbench: ML pipeline architecture benchmarks")
    for opt in OPTIONS:
        action = "append" if opt.multiple else "store"
        group.addoption(opt.flag, dest=opt.dest, metavar=opt.metavar, default=None, action=action,
                        help=opt.help.replace("%", "%%"))  # argparse %-formats help texts
        parser.addini(opt.dest, opt.help, type="linelist" if opt.multiple else None)


class Settings:
    """Resolved option values: command line over ini over default."""

    def __init__(self, values: dict[str, Any]):
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    @classmethod
    def from_config(cls, config: pytest.Config) -> "Settings":
        values = {}
        for opt in OPTIONS:
            raw, source = config.getoption(opt.dest), opt.flag
            if raw is None:
                raw, source = config.getini(opt.dest) or None, f"ini {opt.dest}"
            if opt.multiple:
                values[opt.name] = [_parse(opt, item, source) for item in raw or []]
                continue
            if raw is None:
                values[opt.name] = opt.default
                continue
            try:
                values[opt.name] = opt.parse(str(raw).strip())
            except ValueError as exc:
                raise pytest.UsageError(f"{source}={raw!r}: {exc}") from None
        return cls(values)


def _parse(opt: Option, raw: str, source: str) -> Any:
    try:
        return opt.parse(str(raw).strip())
    except ValueError as exc:
        raise pytest.UsageError(f"{source}={raw!r}: {exc}") from None
