"""OpenTelemetry for benchmark runs: a trace per run and metrics from the
monitor and the run record, sent to the console, OTLP or an OTLP JSON file.

The run's root span gets its ids before the run starts; its ``traceparent``
travels in the run spec and the ``TRACEPARENT`` variable to every step, and
each step creates its own span under it (``events.step_span``) and reports it
in its step event, the channel that already brings step times back from any
process, worker or pod. Spans and metrics are built and exported only when no
run is measured (after each test and at the session's end): exporting from a
thread during the next rounds would compete with them for the CPU and, in the
test process, the GIL. Step processes do not import OpenTelemetry at all.
"""
from __future__ import annotations

import io
import logging
import os
import time
from typing import Any, Iterable, Mapping, Sequence

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    Gauge,
    InMemoryMetricReader,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from pytest_mlpbench import __version__
from pytest_mlpbench.measure.monitor import Sample
from pytest_mlpbench.measure.record import RunRecord
from pytest_mlpbench.sinks.otlp_file import FileMetricExporter, FileSpanExporter, JsonLinesFile

log = logging.getLogger(__name__)

SCOPE = InstrumentationScope("pytest_mlpbench", __version__)
PROTOCOLS = ("http/protobuf", "grpc")
SECONDS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000, 2500)
BYTES_BUCKETS = tuple(float(4 ** n) for n in range(5, 19))  # 1 KiB .. 64 GiB
COUNT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def otlp_protocol(signal: str) -> str:
    """The OTLP protocol for ``signal`` (TRACES, METRICS) from the standard variables."""
    name = f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL"
    value = os.environ.get(name) or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if value.strip() not in PROTOCOLS:
        raise pytest.UsageError(
            f"--mlpbench-otel=otlp: {name} or OTEL_EXPORTER_OTLP_PROTOCOL={value!r} is not supported; "
            f"valid: {', '.join(PROTOCOLS)}"
        )
    return value.strip()


def otlp_exporters() -> tuple[SpanExporter, MetricExporter]:
    """OTLP exporters; endpoint, headers, TLS, timeout and compression come from
    the ``OTEL_EXPORTER_OTLP_*`` variables, which the exporters read themselves."""
    if otlp_protocol("TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    if otlp_protocol("METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    return OTLPSpanExporter(), OTLPMetricExporter()


class Telemetry:
    """Keeps finished runs and exports them when no run is measured: at the
    end of each test (``flush``) and of the session (``shutdown``)."""

    def __init__(self, exporters: Sequence[tuple[SpanExporter, MetricExporter]], console: io.StringIO | None = None):
        self.resource = Resource.create({"service.name": "pytest-mlpbench", "service.version": SCOPE.version})
        self.exporters = list(exporters)
        self.console = console
        self.failures = 0
        self.exported_runs = 0
        self.export_cpu_s = 0.0  # what exporting cost the test process, between runs
        # one reader per exporter, each with the temporality its exporter prefers
        self._readers = [
            InMemoryMetricReader(preferred_temporality=m._preferred_temporality,
                                 preferred_aggregation=m._preferred_aggregation)
            for _, m in self.exporters
        ]
        self._meters = MeterProvider(resource=self.resource, metric_readers=self._readers)
        self._instruments = Instruments(self._meters.get_meter(SCOPE.name, SCOPE.version))
        self._pending: list[tuple] = []

    @classmethod
    def from_settings(cls, settings) -> "Telemetry":
        exporters, console = [], None
        if settings.otel == "console":
            console = io.StringIO()
            exporters.append((ConsoleSpanExporter(out=console), ConsoleMetricExporter(out=console)))
        elif settings.otel == "otlp":
            exporters.append(otlp_exporters())
        if settings.otel_file:
            sink = JsonLinesFile(settings.otel_file)
            exporters.append((FileSpanExporter(sink), FileMetricExporter(sink)))
        return cls(exporters, console)

    def add_run(self, record: RunRecord, events: list[Mapping], samples: list[Sample], traceparent: str) -> None:
        """Keep a finished run for the next flush: nothing is exported between
        the rounds of a benchmark, where it would compete with the next run."""
        self._pending.append((record, events, samples, traceparent))

    def flush(self) -> None:
        """Export the runs kept so far. Each exporter bounds its own time
        (``OTEL_EXPORTER_OTLP_TIMEOUT``); a failure is counted, not raised."""
        cpu0 = time.process_time()
        pending, self._pending = self._pending, []
        for run in pending:
            try:
                self._export(*run)
            except Exception:  # an exporter's bug must not fail the benchmark or lose the other runs
                log.exception("mlpbench telemetry: exporting a run failed")
                self.failures += 1
        self.export_cpu_s += time.process_time() - cpu0

    def shutdown(self) -> None:
        self.flush()
        for spans, metrics in self.exporters:
            spans.shutdown()
            metrics.shutdown()
        self._meters.shutdown()

    def summary(self) -> str:
        failed = f", {self.failures} export(s) failed" if self.failures else ""
        return f"telemetry: exported {self.exported_runs} run(s){failed} ({self.export_cpu_s:.3f} s CPU)"

    def console_text(self) -> str:
        return self.console.getvalue() if self.console else ""

    def _export(self, record: RunRecord, events, samples, traceparent: str) -> None:
        spans = run_spans(self.resource, record, events, traceparent)
        if not record.warmup:
            self._instruments.record(record)
        series = sample_series(record, samples) if not record.warmup else []
        for (span_exporter, metric_exporter), reader in zip(self.exporters, self._readers):
            if span_exporter.export(spans) != SpanExportResult.SUCCESS:
                self.failures += 1
            data = with_metrics(reader.get_metrics_data(), self.resource, series)
            if data and metric_exporter.export(data) != MetricExportResult.SUCCESS:
                self.failures += 1
        self.exported_runs += 1


def _context(trace_id: str, span_id: str, flags: str = "01") -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=False, trace_flags=TraceFlags(int(flags, 16)))


def run_attributes(record: RunRecord) -> dict[str, Any]:
    attrs = {
        "mlpbench.architecture": record.architecture,
        "mlpbench.workload": record.workload,
        "mlpbench.scale": record.scale,
        "mlpbench.round": record.round,
        "mlpbench.warmup": record.warmup,
        "mlpbench.outcome": record.outcome,
        "mlpbench.run_id": record.run_id,
    }
    attrs.update({f"mlpbench.{name}": value for name, value in record.figures().items()})
    return attrs


def run_spans(resource: Resource, record: RunRecord, events: Iterable[Mapping], traceparent: str) -> list[ReadableSpan]:
    """The run's root span and one span per step attempt, with the steps' own ids and times."""
    _, trace_id, span_id, flags = traceparent.split("-")
    root = _context(trace_id, span_id, flags)
    failed = record.outcome != "passed"
    spans = [ReadableSpan(
        name=f"{record.workload} on {record.architecture}",
        context=root,
        resource=resource,
        attributes=run_attributes(record),
        kind=SpanKind.INTERNAL,
        status=Status(StatusCode.ERROR, f"{record.outcome}: {record.error}") if failed else Status(),
        start_time=record.submit_ns,
        end_time=record.end_ns,
        instrumentation_scope=SCOPE,
    )]
    delays = {(row["step"], row["index"]): row for row in record.steps}
    for event in events:
        span = event.get("span")
        if span:
            spans.append(step_span(resource, event, span, delays.get((event["step"], event.get("index")), {})))
    return spans


def step_span(resource: Resource, event: Mapping, span: Mapping, row: Mapping) -> ReadableSpan:
    attrs = {
        "mlpbench.step": event["step"],
        "process.pid": event.get("pid"),
        "host.name": event.get("host"),
        "mlpbench.outcome": event.get("outcome"),
        "mlpbench.cpu_s": event.get("cpu_s"),
        "mlpbench.peak_rss_bytes": event.get("peak_rss_bytes"),
        "mlpbench.task.index": event.get("index"),
        "mlpbench.queue_delay_s": row.get("queue_delay_s"),
        "mlpbench.launch_delay_s": row.get("launch_delay_s"),
    }
    failed = event.get("outcome") != "passed"
    return ReadableSpan(
        name=event["step"],
        context=_context(span["trace_id"], span["span_id"], span.get("trace_flags", "01")),
        parent=_context(span["trace_id"], span["parent_span_id"]),
        resource=resource,
        attributes={k: v for k, v in attrs.items() if v is not None},
        status=Status(StatusCode.ERROR, event.get("error")) if failed else Status(),
        start_time=event["start_ns"],
        end_time=event["end_ns"],
        instrumentation_scope=SCOPE,
    )


def metric_attributes(record: RunRecord) -> dict[str, str]:
    return {"mlpbench.architecture": record.architecture, "mlpbench.workload": record.workload,
            "mlpbench.scale": record.scale}


class Instruments:
    """Counters of the semantic conventions and a histogram per run-record figure."""

    def __init__(self, meter):
        self.meter = meter
        self.cpu_time = meter.create_counter("process.cpu.time", "s", "CPU seconds of the run's process tree")
        self.disk_io = meter.create_counter("process.disk.io", "By", "Bytes read and written through "
                                            "system calls by the run's process tree")
        self.histograms: dict[str, Any] = {}

    def record(self, record: RunRecord) -> None:
        attrs = metric_attributes(record)
        self.cpu_time.add(record.cpu_s, attrs)
        self.disk_io.add(record.io_read_bytes, {**attrs, "disk.io.direction": "read"})
        self.disk_io.add(record.io_write_bytes, {**attrs, "disk.io.direction": "write"})
        for figure, value in record.figures().items():
            self.histogram(figure, figure in record.metrics).record(value, attrs)

    def histogram(self, figure: str, workload_metric: bool):
        if figure not in self.histograms:
            name, unit, buckets = figure_metric(figure, workload_metric)
            self.histograms[figure] = self.meter.create_histogram(
                name, unit, f"run record figure {figure}", explicit_bucket_boundaries_advisory=buckets)
        return self.histograms[figure]


def figure_metric(figure: str, workload_metric: bool) -> tuple[str, str, Sequence[float] | None]:
    """Metric name, unit and buckets of a run-record figure: the unit leaves the name."""
    if workload_metric:
        return f"mlpbench.workload.{figure}", "1", None
    if figure.endswith("_s"):
        return f"mlpbench.run.{figure[:-2]}", "s", SECONDS_BUCKETS
    if figure.endswith("_bytes"):
        return f"mlpbench.run.{figure[:-6]}", "By", BYTES_BUCKETS
    return f"mlpbench.run.{figure}", "{process}", COUNT_BUCKETS


def sample_series(record: RunRecord, samples: Sequence[Sample]) -> list[Metric]:
    """The monitor's samples as gauges at the samples' own times (the monitor
    starts just before ``submit_ns``): one point per sample."""
    attrs = metric_attributes(record)
    cpus = os.cpu_count() or 1

    def points(value):
        return [NumberDataPoint(attrs, record.submit_ns, record.submit_ns + int(s.t_s * 1e9), value(s))
                for s in samples]

    return [
        Metric("process.memory.usage", "Resident memory of the run's process tree", "By",
               Gauge(points(lambda s: s.rss_bytes))),
        Metric("process.cpu.utilization", "CPU time of the run's process tree per elapsed time and CPU", "1",
               Gauge(points(lambda s: s.cpu_percent / 100 / cpus))),
    ] if samples else []


def with_metrics(data: MetricsData | None, resource: Resource, extra: list[Metric]) -> MetricsData | None:
    """``data`` (the collected instruments) with ``extra`` metrics added to its scope."""
    metrics = [m for rm in (data.resource_metrics if data else []) for sm in rm.scope_metrics for m in sm.metrics]
    metrics += extra
    if not metrics:
        return None
    return MetricsData([ResourceMetrics(resource, [ScopeMetrics(SCOPE, metrics, "")], "")])
