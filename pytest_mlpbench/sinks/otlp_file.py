"""OTLP JSON lines: spans and metrics written to a file for offline use.

Each export call appends one line, an ``ExportTraceServiceRequest`` or
``ExportMetricsServiceRequest`` in the OTLP/JSON encoding (camelCase names,
enums as integers, trace and span ids as hex), the format the OpenTelemetry
Collector's ``file`` exporter writes and its ``otlpjsonfile`` receiver reads.
"""
from __future__ import annotations

import base64
import json
import threading
from typing import Any, Sequence

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

_ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def to_otlp_json(message) -> str:
    """One OTLP/JSON line; protobuf's JSON mapping writes ids as base64, OTLP wants hex."""
    return json.dumps(_hex_ids(MessageToDict(message, use_integers_for_enums=True)), separators=(",", ":"))


def _hex_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: base64.b64decode(v).hex() if k in _ID_KEYS and isinstance(v, str) else _hex_ids(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [_hex_ids(v) for v in value]
    return value


class JsonLinesFile:
    """The file both exporters append to; one lock, so lines never interleave."""

    def __init__(self, path: str):
        self.path = path
        self._lock = threading.Lock()
        self._file = open(path, "w", encoding="utf-8")

    def write(self, line: str) -> bool:
        with self._lock:
            if self._file.closed:
                return False
            self._file.write(line + "\n")
            self._file.flush()
            return True

    def close(self) -> None:
        with self._lock:
            self._file.close()


class FileSpanExporter(SpanExporter):
    def __init__(self, sink: JsonLinesFile):
        self.sink = sink

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        ok = self.sink.write(to_otlp_json(encode_spans(spans)))
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def shutdown(self) -> None:
        self.sink.close()


class FileMetricExporter(MetricExporter):
    def __init__(self, sink: JsonLinesFile):
        super().__init__()
        self.sink = sink

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs) -> MetricExportResult:
        ok = self.sink.write(to_otlp_json(encode_metrics(metrics_data)))
        return MetricExportResult.SUCCESS if ok else MetricExportResult.FAILURE

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs) -> None:
        self.sink.close()


def read_otlp_json(path) -> tuple[list[dict], list[dict]]:
    """Spans and metrics of an OTLP JSON lines file, flattened: each span and
    each metric gets its resource attributes under ``resource``."""
    spans, metrics = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            request = json.loads(line)
            for rs in request.get("resourceSpans", []):
                resource = attributes(rs.get("resource", {}).get("attributes", []))
                spans += [{**s, "resource": resource} for ss in rs.get("scopeSpans", []) for s in ss.get("spans", [])]
            for rm in request.get("resourceMetrics", []):
                resource = attributes(rm.get("resource", {}).get("attributes", []))
                metrics += [{**m, "resource": resource}
                            for sm in rm.get("scopeMetrics", []) for m in sm.get("metrics", [])]
    return spans, metrics


def attributes(pairs: list[dict]) -> dict[str, Any]:
    """OTLP/JSON ``[{"key": k, "value": {"stringValue": v}}]`` as a plain dict."""
    out = {}
    for pair in pairs:
        kind, value = next(iter(pair.get("value", {}).items()), ("", None))
        out[pair["key"]] = int(value) if kind == "intValue" else value
    return out
