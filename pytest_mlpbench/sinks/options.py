"""The options of the sinks: OpenTelemetry export and MLflow logging."""
from pytest_mlpbench.options import Option, choice, new_file
from pytest_mlpbench.sinks.mlflow import parse_tracking_uri

OTEL = Option("otel", "OpenTelemetry export of a trace per run (a span per run and per step attempt) and metrics "
              "(process.cpu.time, process.memory.usage, process.disk.io, run-record histograms): none (default), "
              "console (printed at the end) or otlp (endpoint, protocol http/protobuf or grpc, headers from the "
              "standard OTEL_EXPORTER_OTLP_* variables).", choice("none", "console", "otlp"), "none", "EXPORTER")
OTEL_FILE = Option("otel_file", "Also write the spans and metrics to FILE as OTLP JSON lines, for offline use (the "
                   "format of the OpenTelemetry Collector's file exporter).", new_file, None, "FILE")
MLFLOW_URI = Option("mlflow_uri", "Log every measured run to MLflow: a tracking server http://HOST:PORT, a store "
                    "sqlite:///PATH.db, or a directory (one experiment per workload, one MLflow run per architecture "
                    "and round, the figures as metrics, the per-step table and plots as artifacts).",
                    parse_tracking_uri, None, "URI")

OPTIONS = (OTEL, OTEL_FILE, MLFLOW_URI)
