"""OpenTelemetry: a trace per run with a child span per step attempt, metrics
from the monitor and the run record, exported to a file, OTLP/HTTP and OTLP/gRPC."""
import csv
import gzip
import os
import subprocess
import sys
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import LINEAR_TEST, bench_source

from pytest_mlpbench import Step, Workload
from pytest_mlpbench.model.workload import RunSpec
from pytest_mlpbench.options import new_file
from pytest_mlpbench.sinks.otlp_file import attributes, read_otlp_json
from pytest_mlpbench.step.events import execute_step, read_events, step_span

REPO = Path(__file__).parents[1]
FRAMEWORKS = ["metaflow-local", "airflow-local", "kubeflow-local", "dvc", "mlflow"]
#: the local framework architectures take 20 s (dvc) to 3 min (airflow-local, servers included) on 2 cores
ARCHITECTURES = ["inprocess", "subprocess", *(pytest.param(name, marks=pytest.mark.slow) for name in FRAMEWORKS)]
FANOUT_TEST = bench_source("fanout")
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def seen_traceparent(ctx) -> dict:
    return {"traceparent": os.environ.get("TRACEPARENT")}


ENV_SPY = Workload(name="envspy", ref="test_telemetry:ENV_SPY", steps=(Step("look", seen_traceparent),),
                   scales={"smoke": {}, "small": {}, "full": {}})


def spec_for(tmp_path, traceparent):
    return RunSpec(workload=ENV_SPY.ref, scale="smoke", run_id="r1", artifacts=str(tmp_path),
                   events=str(tmp_path / "events.jsonl"), traceparent=traceparent)


# -- the step side: no OpenTelemetry, just ids in the step event --


def test_a_step_creates_its_span_under_the_run_and_passes_it_on(tmp_path, monkeypatch):
    monkeypatch.delenv("TRACEPARENT", raising=False)
    outputs = execute_step(spec_for(tmp_path, TRACEPARENT), "look", {})
    (event,) = read_events(tmp_path / "events.jsonl")
    span = event["span"]
    assert span["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert span["parent_span_id"] == "b7ad6b7169203331"
    assert len(span["span_id"]) == 16 and span["span_id"] != span["parent_span_id"]
    # what the step starts is traced under the step's span; the process's own variable comes back
    assert outputs["traceparent"] == f"00-{span['trace_id']}-{span['span_id']}-01"
    assert "TRACEPARENT" not in os.environ


def test_the_environment_variable_is_the_fallback(tmp_path, monkeypatch):
    monkeypatch.setenv("TRACEPARENT", TRACEPARENT)
    execute_step(spec_for(tmp_path, None), "look", {})
    (event,) = read_events(tmp_path / "events.jsonl")
    assert event["span"]["parent_span_id"] == "b7ad6b7169203331"
    assert os.environ["TRACEPARENT"] == TRACEPARENT


@pytest.mark.parametrize("value", [None, "", "junk", "00-" + "0" * 32 + "-b7ad6b7169203331-01",
                                   "00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01",
                                   "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                                   "00-0af7651916cd43dd8448eb211c80319X-b7ad6b7169203331-01"])
def test_no_valid_traceparent_no_span(value):
    assert step_span(value) is None


def test_without_telemetry_nothing_imports_opentelemetry(tmp_path):
    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import pytest_mlpbench.plugin, pytest_mlpbench.session, pytest_mlpbench.step
from pytest_mlpbench.model.workload import RunSpec
from pytest_mlpbench.step.events import execute_step
spec = RunSpec(workload="fakes:LINEAR", scale="smoke", run_id="r", artifacts={str(tmp_path)!r},
               events={str(tmp_path / 'e.jsonl')!r}, traceparent={TRACEPARENT!r})
execute_step(spec, "begin", {{}})
print(sorted(m for m in sys.modules if m.startswith("opentelemetry")))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "[]"
    assert '"span"' in (tmp_path / "e.jsonl").read_text()


# -- the harness side: root spans, step spans and metrics as exported --


def run_bench(bench, arch, *args, source=FANOUT_TEST):
    bench.tests(source)
    result = bench.run(f"--mlpbench-arch={arch}", "--mlpbench-rounds=1", "--mlpbench-scale=smoke", *args)
    outcomes = result.parseoutcomes()
    if outcomes.get("skipped") and not outcomes.get("passed"):
        pytest.skip("\n".join(line for line in result.stdout.lines if "SKIP" in line) or "skipped")
    return result


def roots_and_children(spans, runs):
    """Per run record: its root span and the spans whose parent it is."""
    by_id = {attributes(s["attributes"]).get("mlpbench.run_id"): s for s in spans if not s.get("parentSpanId")}
    for run in runs:
        root = by_id[run["run_id"]]
        children = [s for s in spans if s.get("parentSpanId") == root["spanId"]]
        yield run, root, children


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_every_step_is_a_child_span_of_its_run(bench, arch):
    run_bench(bench, arch, "--mlpbench-otel-file=otel.jsonl").assert_outcomes(passed=1)
    spans, metrics = read_otlp_json(bench.path / "otel.jsonl")
    runs = bench.runs()
    assert len([s for s in spans if not s.get("parentSpanId")]) == len(runs) >= 1
    for run, root, children in roots_and_children(spans, runs):
        attrs = attributes(root["attributes"])
        assert attrs["mlpbench.architecture"] == arch
        assert attrs["mlpbench.workload"] == "fanout"
        assert attrs["mlpbench.scale"] == "smoke"
        assert attrs["mlpbench.round"] == run["round"]
        assert attrs["mlpbench.outcome"] == "passed"
        assert (int(root["startTimeUnixNano"]), int(root["endTimeUnixNano"])) == (run["submit_ns"], run["end_ns"])
        tasks = sorted((a["mlpbench.step"], a.get("mlpbench.task.index"))
                       for a in (attributes(c["attributes"]) for c in children))
        assert tasks == [("begin", None), ("gather", None), ("shard", 0), ("shard", 1), ("shard", 2)]
        assert {c["traceId"] for c in children} == {root["traceId"]}
        rows = {(row["step"], row["index"]): row for row in run["steps"]}
        for child in children:
            attrs = attributes(child["attributes"])
            row = rows[attrs["mlpbench.step"], attrs.get("mlpbench.task.index")]
            start, end = int(child["startTimeUnixNano"]), int(child["endTimeUnixNano"])
            # the span's times are the step's own (the record rounds them to the microsecond)
            assert abs(start - run["submit_ns"] - row["start_s"] * 1e9) <= 1000
            assert abs(end - start - row["duration_s"] * 1e9) <= 1000
            assert attrs["process.pid"] == row["pid"] and attrs["host.name"] == row["host"]
            assert attrs["mlpbench.outcome"] == "passed"
    check_metrics(metrics, [r for r in runs if not r["warmup"]], arch)


def check_metrics(metrics, runs, arch):
    """The monitor's and the record's figures, as the file holds them."""
    last = {m["name"]: m for m in metrics}  # cumulative: the last export holds the totals
    want = {"mlpbench.architecture": arch, "mlpbench.workload": "fanout", "mlpbench.scale": "smoke"}

    def points(name):
        data = last[name].get("sum") or last[name].get("histogram") or last[name].get("gauge")
        return data["dataPoints"]

    (cpu,) = points("process.cpu.time")
    assert attributes(cpu["attributes"]) == want and last["process.cpu.time"]["unit"] == "s"
    assert cpu["asDouble"] == pytest.approx(sum(r["cpu_s"] for r in runs), rel=1e-6)
    io = {attributes(p["attributes"])["disk.io.direction"]: int(p["asInt"]) for p in points("process.disk.io")}
    assert io == {"read": sum(r["io_read_bytes"] for r in runs), "write": sum(r["io_write_bytes"] for r in runs)}
    (wall,) = points("mlpbench.run.wall")
    assert int(wall["count"]) == len(runs) and wall["sum"] == pytest.approx(sum(r["wall_s"] for r in runs))
    (total,) = points("mlpbench.workload.total")
    assert total["sum"] == len(runs) * 14.0  # the fanout workload's own metric: 1 + 4 + 9 per run
    memory = [m["gauge"]["dataPoints"] for m in metrics if m["name"] == "process.memory.usage"]
    assert len(memory) == len(runs)  # one series per run, a point per monitor sample at the sample's time
    for run, series in zip(runs, memory):
        with open(run["series"]) as f:
            samples = list(csv.DictReader(f))
        assert [int(p["asInt"]) for p in series] == [int(s["rss_bytes"]) for s in samples]
        assert all(run["submit_ns"] < int(p["timeUnixNano"]) < run["end_ns"] + 10**9 for p in series)


def test_failed_runs_are_errors_and_console_prints_at_the_end(bench):
    bench.tests(bench_source("linear", "failing"))
    result = bench.run("--mlpbench-arch=inprocess", "--mlpbench-rounds=1", "--mlpbench-otel=console",
                       "--mlpbench-otel-file=otel.jsonl")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*mlpbench: telemetry: exported 2 run(s)*", '*"name": "middle"*',
                                 '*"name": "process.memory.usage"*'])
    spans, _ = read_otlp_json(bench.path / "otel.jsonl")
    (root,) = [s for s in spans if not s.get("parentSpanId") and s["name"] == "failing on inprocess"]
    assert root["status"]["code"] == 2 and root["status"]["message"].startswith("failed:")
    assert attributes(root["attributes"])["mlpbench.outcome"] == "failed"
    steps = {s["name"]: s for s in spans if s.get("parentSpanId") == root["spanId"]}
    assert set(steps) == {"begin", "fail"}
    assert steps["begin"]["status"].get("code", 0) == 0
    assert steps["fail"]["status"]["code"] == 2 and "fails on purpose" in steps["fail"]["status"]["message"]
    assert attributes(steps["fail"]["attributes"])["mlpbench.outcome"] == "failed"


def test_an_unsupported_otlp_protocol_is_a_usage_error(bench, monkeypatch):
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    bench.tests()
    result = bench.run("--mlpbench-otel=otlp")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported; "
                                 "valid: http/protobuf, grpc*"])
    assert "Traceback" not in result.stderr.str()


def test_otel_file_must_be_a_file_in_a_directory(tmp_path):
    assert new_file(str(tmp_path / "t.jsonl")) == str(tmp_path / "t.jsonl")
    with pytest.raises(ValueError, match="no such directory: /no/such"):
        new_file("/no/such/t.jsonl")
    with pytest.raises(ValueError, match="is a directory"):
        new_file(str(tmp_path))


# -- real OTLP receivers on 127.0.0.1 --


def check_received(spans, metric_names, runs):
    names = {s.name for s in spans}
    assert names == {"linear on subprocess", "begin", "middle", "end"}
    (root,) = [s for s in spans if not s.parent_span_id]
    children = [s for s in spans if s.parent_span_id == root.span_id]
    assert sorted(c.name for c in children) == ["begin", "end", "middle"]
    assert {c.trace_id for c in children} == {root.trace_id}
    assert (root.start_time_unix_nano, root.end_time_unix_nano) == (runs[0]["submit_ns"], runs[0]["end_ns"])
    assert {"process.cpu.time", "process.memory.usage", "process.disk.io", "mlpbench.run.overhead"} <= metric_names


def test_otlp_http_receiver_gets_spans_and_metrics(bench, monkeypatch):
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest, ExportMetricsServiceResponse)
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest, ExportTraceServiceResponse)

    received = {"/v1/traces": [], "/v1/metrics": []}
    kinds = {"/v1/traces": (ExportTraceServiceRequest, ExportTraceServiceResponse),
             "/v1/metrics": (ExportMetricsServiceRequest, ExportMetricsServiceResponse)}

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            request, response = kinds[self.path]
            assert self.headers["Content-Type"] == "application/x-protobuf"
            received[self.path].append(request.FromString(body))
            payload = response().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        run_bench(bench, "subprocess", "--mlpbench-otel=otlp", source=LINEAR_TEST).assert_outcomes(passed=1)
    finally:
        server.shutdown()
        server.server_close()
    spans = [s for r in received["/v1/traces"] for rs in r.resource_spans for ss in rs.scope_spans for s in ss.spans]
    metrics = {m.name for r in received["/v1/metrics"] for rm in r.resource_metrics
               for sm in rm.scope_metrics for m in sm.metrics}
    check_received(spans, metrics, bench.runs())


def test_otlp_grpc_receiver_gets_spans_and_metrics(bench, monkeypatch):
    import grpc
    from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as mpb, metrics_service_pb2_grpc as mgrpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as tpb, trace_service_pb2_grpc as tgrpc

    spans, metrics = [], set()

    class Traces(tgrpc.TraceServiceServicer):
        def Export(self, request, context):
            spans.extend(s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans)
            return tpb.ExportTraceServiceResponse()

    class Metrics(mgrpc.MetricsServiceServicer):
        def Export(self, request, context):
            metrics.update(m.name for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics)
            return mpb.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    tgrpc.add_TraceServiceServicer_to_server(Traces(), server)
    mgrpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
        run_bench(bench, "subprocess", "--mlpbench-otel=otlp", source=LINEAR_TEST).assert_outcomes(passed=1)
    finally:
        server.stop(grace=None)
    check_received(spans, metrics, bench.runs())
