"""The workload model and the run record's computations, on known inputs."""
import re

import pytest

from pytest_mlpbench.architectures.base import Run
from pytest_mlpbench.architectures.inprocess import InProcess
from pytest_mlpbench.measure.monitor import Usage
from pytest_mlpbench.measure.record import build_record
from pytest_mlpbench.model.workload import RunSpec, Step, Workload, WorkloadError, step_inputs, task_inputs
from pytest_mlpbench.options import CORE
from pytest_mlpbench.registry import Registry
from pytest_mlpbench.step.events import read_events
from workloads import windmill

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


def usage() -> Usage:
    return Usage(cpu_s=1.0, peak_rss_bytes=10, io_read_bytes=0, io_write_bytes=0, processes=0, monitor_cpu_s=0,
                 memory_method="test")


def record_of(events, wall_s: float, workload=None):
    return build_record(run_id="r", architecture="x", workload=workload or diamond(), scale="smoke", round=0,
                        warmup=False, submit_ns=0, wall_ns=int(wall_s * 1e9), events=events, usage=usage(),
                        artifact_bytes=0)


def test_record_critical_path_gaps_and_delays():
    events = [
        event("a", 1.0, 2.0),
        event("fan", 2.5, 4.0, index=0),
        event("fan", 2.6, 5.0, index=1),  # the longest fan-out task: 2.4 s
        event("b", 2.1, 3.0),
        event("join", 5.5, 6.0, metrics={"accuracy": 0.9}),
    ]
    record = build_record(
        run_id="r", architecture="x", workload=diamond(), scale="smoke", round=0, warmup=False,
        submit_ns=0, wall_ns=int(7e9), events=events, usage=usage(), artifact_bytes=0,
        task_info={("fan", 1): {"queued_ns": int(2.2e9), "started_ns": int(2.4e9), "try_number": 1}},
    )
    assert record.wall_s == 7.0 and record.startup_s == 1.0
    assert record.compute_s == pytest.approx(1.0 + 2.4 + 0.5)  # a -> fan -> join
    assert record.overhead_s == pytest.approx(7.0 - 3.9)
    assert record.gaps == {"a->fan": 0.5, "a->b": 0.1, "fan->join": 0.5, "b->join": 2.5}
    assert record.metrics == {"accuracy": 0.9}
    assert record.serial_s == pytest.approx(2.5 - 2.4)  # the tasks overlapped but for 0.1 s
    fan1 = next(r for r in record.steps if r["step"] == "fan" and r["index"] == 1)
    assert fan1["queue_delay_s"] == pytest.approx(0.2) and fan1["launch_delay_s"] == pytest.approx(0.2)
    assert fan1["try_number"] == 1


def test_retried_step_counts_its_last_attempt():
    work = Workload("one", "test:one", (Step("a", noop),), SCALES)
    events = [event("a", 0.0, 1.0, outcome="failed"), event("a", 2.0, 2.5, outcome="passed")]
    record = build_record(
        run_id="r", architecture="x", workload=work, scale="smoke", round=0, warmup=False,
        submit_ns=0, wall_ns=int(3e9), events=events, usage=usage(), artifact_bytes=0,
    )
    assert record.compute_s == 0.5 and [r["outcome"] for r in record.steps] == ["passed"]


def test_fanout_tasks_run_one_after_another_are_counted_as_serial():
    sequential = [event("a", 0.0, 1.0), event("b", 1.0, 1.5), event("fan", 1.0, 2.0, index=0),
                  event("fan", 2.1, 3.6, index=1), event("fan", 3.7, 4.2, index=2), event("join", 4.3, 4.5)]
    record = record_of(sequential, 5.0)
    assert record.serial_s == pytest.approx(1.0 + 0.5)  # every task but the longest
    assert record.compute_s == pytest.approx(1.0 + 1.5 + 0.2)
    parallel = [event("a", 0.0, 1.0), event("b", 1.0, 1.5), event("fan", 1.1, 2.1, index=0),
                event("fan", 1.1, 2.6, index=1), event("fan", 1.1, 1.6, index=2), event("join", 2.7, 2.9)]
    assert record_of(parallel, 3.0).serial_s == 0.0
    staggered = [dict(e, start_ns=e["start_ns"] + 100_000_000 * e["index"]) if e["step"] == "fan" else e
                 for e in parallel]  # launched 0.1 s apart: the first ran 0.1 s before the longest began
    assert record_of(staggered, 3.0).serial_s == pytest.approx(0.1)


def test_clock_skew_of_another_host_is_bounded_and_marks_figures_it_exceeds():
    here, there = {"host": "here"}, {"host": "there"}
    events = [event("a", 0.2, 1.0, **here), event("b", 1.1, 1.5, **here), event("fan", 1.05, 1.9, index=0, **there),
              event("fan", 3.2, 3.4, index=1, **there), event("join", 2.0, 2.5, **here)]
    record = record_of(events, 3.0)  # "there" ended a task 0.4 s after the harness saw the run end
    assert record.clock_skew_s == {"here": 0.0, "there": pytest.approx(0.4)}
    assert record.unreliable == ["gaps.a->fan"]  # 0.05 s across hosts; fan->join is -1.4 s, above the skew
    remote_first = [dict(e, host="there") if e["step"] == "a" else e for e in events]
    assert "startup_s" in record_of(remote_first, 3.0).unreliable  # 0.2 s from our clock to theirs


@pytest.mark.parametrize("workload, tasks, fib", [(windmill.LIGHT, 40, 55), (windmill.LONG, 10, 6765)],
                         ids=["light", "long"])
def test_windmill_chains_compute_fibonacci_in_order(tmp_path, workload, tasks, fib):
    (tmp_path / "artifacts").mkdir()
    spec = RunSpec(workload=workload.ref, scale="smoke", run_id="w", artifacts=str(tmp_path / "artifacts"),
                   events=str(tmp_path / "events.jsonl"))
    InProcess().run(workload, Run(spec=spec, workload=workload, dir=tmp_path))
    events = read_events(spec.events, "w")
    assert [e["step"] for e in events] == [f"task_{i:02d}" for i in range(tasks)]
    assert all(e["outcome"] == "passed" and e["metrics"] == {"fib": fib} for e in events)


def test_windmill_published_shape_is_the_default_and_registered():
    assert windmill.fibo(10) == 55 and windmill.fibo(20) == 6765
    assert next(o.default for o in CORE if o.name == "scale") in windmill.PUBLISHED_SCALES
    registry = Registry.builtin()
    for workload, shape in [(windmill.LIGHT, {"tasks": 40, "n": 10}), (windmill.LONG, {"tasks": 10, "n": 33})]:
        assert workload.scales["small"] == workload.scales["full"] == shape
        assert len(workload.steps) == shape["tasks"] and workload.edges()[0] == ("task_00", "task_01")
        assert registry.workload(workload.name).marker == "anchors"


def test_workloads_and_steps_are_frozen_values_and_replace_checks_again():
    steps = (Step("a", "m:a"), Step("b", "m:b", needs=("a",)))
    workload = Workload("w", "m:W", steps, {s: {} for s in ("smoke", "small", "full")})
    assert workload == Workload("w", "m:W", steps, {s: {} for s in ("smoke", "small", "full")})
    assert Step("a", "m:a") == steps[0] != Step("a", "m:other") and hash(Step("a", "m:a")) == hash(steps[0])
    with pytest.raises(AttributeError, match="cannot assign to Workload.marker: it is frozen"):
        workload.marker = "inference"
    assert workload.replace(marker="inference").marker == "inference" and workload.marker == "training"
    with pytest.raises(WorkloadError, match="duplicate step names"):
        workload.replace(steps=steps + (Step("a", "m:a"),))
    assert repr(steps[1]) == "Step(name='b', fn='m:b', needs=('a',), foreach=None)"


def test_a_run_spec_travels_as_json_and_back():
    spec = RunSpec("m:W", "smoke", "r1", "/art", "/ev", params={"n": 1}, handoff="native")
    assert RunSpec.from_json(spec.to_json()) == spec and spec.replace(run_id="r2").run_id == "r2"
