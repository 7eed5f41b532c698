"""The workload model and the run record's computations, on known inputs."""
import re

import pytest

from pytest_mlpbench.monitor import Usage
from pytest_mlpbench.record import build_record
from pytest_mlpbench.workload import Step, Workload, WorkloadError, step_inputs, task_inputs

SCALES = {s: {} for s in ("smoke", "small", "full")}


def noop(ctx, **inputs):
    return {}


def diamond() -> Workload:
    return Workload(
        "diamond",
        "test:diamond",
        (
            Step("a", noop),
            Step("fan", noop, needs=("a",), foreach="shards"),
            Step("b", noop, needs=("a",)),
            Step("join", noop, needs=("fan", "b")),
        ),
        SCALES,
    )


@pytest.mark.parametrize(
    "steps, scales, message",
    [
        ((Step("a", noop), Step("a", noop)), SCALES, "duplicate step names"),
        ((Step("a", noop, needs=("b",)), Step("b", noop)), SCALES, "needs ['b'], which must be declared before it"),
        ((Step("a", noop, foreach="x"),), SCALES, "fan-out step 'a' needs an upstream step"),
        ((Step("a", noop),), {"smoke": {}}, "no parameters for scales ['small', 'full']"),
    ],
)
def test_bad_definitions_say_what_is_wrong(steps, scales, message):
    with pytest.raises(WorkloadError, match=re.escape(message)):
        Workload("w", "test:w", steps, scales)


def test_inputs_merge_upstream_outputs_and_lists_fanout_outputs():
    work = diamond()
    outputs = {"a": {"shards": [1, 2]}, "fan": [{"sq": 1}, {"sq": 4}], "b": {"model": "m.pt"}}
    assert step_inputs(work, work.step("join"), outputs) == {"sq": [1, 4], "model": "m.pt"}
    fan = work.step("fan")
    assert task_inputs(fan, step_inputs(work, fan, outputs), 1) == {"item": 2}


def test_clashing_inputs_are_an_error():
    work = diamond()
    with pytest.raises(WorkloadError, match=r"inputs \['x'\] come from more than one upstream step"):
        step_inputs(work, work.step("join"), {"fan": [{"x": 1}], "b": {"x": 2}})


def test_step_function_by_path_is_resolved_lazily():
    assert Step("s", "json:dumps").resolve()({"a": 1}) == '{"a": 1}'
    with pytest.raises(WorkloadError, match="cannot import 'json:nope'"):
        Step("s", "json:nope").resolve()


def event(step, start, end, index=None, **extra):
    return {"step": step, "index": index, "start_ns": int(start * 1e9), "end_ns": int(end * 1e9), "pid": 1, **extra}


def test_record_critical_path_gaps_and_delays():
    events = [
        event("a", 1.0, 2.0),
        event("fan", 2.5, 4.0, index=0),
        event("fan", 2.6, 5.0, index=1),  # the longest fan-out task: 2.4 s
        event("b", 2.1, 3.0),
        event("join", 5.5, 6.0, metrics={"accuracy": 0.9}),
    ]
    usage = Usage(cpu_s=1.0, peak_rss_bytes=10, io_read_bytes=0, io_write_bytes=0, processes=0, monitor_cpu_s=0)
    record = build_record(
        run_id="r", architecture="x", workload=diamond(), scale="smoke", round=0, warmup=False,
        submit_ns=0, end_ns=int(7e9), events=events, usage=usage, artifact_bytes=0,
        task_info={("fan", 1): {"queued_ns": int(2.2e9), "started_ns": int(2.4e9), "try_number": 1}},
    )
    assert record.wall_s == 7.0 and record.startup_s == 1.0
    assert record.compute_s == pytest.approx(1.0 + 2.4 + 0.5)  # a -> fan -> join
    assert record.overhead_s == pytest.approx(7.0 - 3.9)
    assert record.gaps == {"a->fan": 0.5, "a->b": 0.1, "fan->join": 0.5, "b->join": 2.5}
    assert record.metrics == {"accuracy": 0.9}
    fan1 = next(r for r in record.steps if r["step"] == "fan" and r["index"] == 1)
    assert fan1["queue_delay_s"] == pytest.approx(0.2) and fan1["launch_delay_s"] == pytest.approx(0.2)
    assert fan1["try_number"] == 1


def test_retried_step_counts_its_last_attempt():
    work = Workload("one", "test:one", (Step("a", noop),), SCALES)
    usage = Usage(cpu_s=0, peak_rss_bytes=0, io_read_bytes=0, io_write_bytes=0, processes=0, monitor_cpu_s=0)
    events = [event("a", 0.0, 1.0, outcome="failed"), event("a", 2.0, 2.5, outcome="passed")]
    record = build_record(
        run_id="r", architecture="x", workload=work, scale="smoke", round=0, warmup=False,
        submit_ns=0, end_ns=int(3e9), events=events, usage=usage, artifact_bytes=0,
    )
    assert record.compute_s == 0.5 and [r["outcome"] for r in record.steps] == ["passed"]
