"""The dvc architecture: real `dvc repro` runs of the fake workloads."""
import json
from importlib.util import find_spec

import pytest
from conftest import bench_source
from fakes import FANOUT, LINEAR

from pytest_mlpbench.architectures.dvc import Pipeline  # imports no dvc until used

pytestmark = pytest.mark.skipif(find_spec("dvc") is None, reason="dvc is not installed")

DVC_TESTS = bench_source("linear", "fanout", "failing")


def tasks(round_):
    return sorted((s["step"], s["index"]) for s in round_["steps"])


def test_every_round_runs_every_stage_fan_out_and_failures(bench):
    bench.tests(DVC_TESTS)
    result = bench.run("--mlpbench-arch=dvc", "--mlpbench-rounds=2", "--mlpbench-scale=smoke", "-v")
    result.stdout.fnmatch_lines(["*test_linear[[]dvc[]] PASSED*", "*test_fanout[[]dvc[]] PASSED*",
                                 "*test_failing[[]dvc[]] FAILED*"])
    benchmarks = {b["name"]: b["extra_info"]["mlpbench"] for b in bench.benchmarks()}

    linear = benchmarks["test_linear[dvc]"]["rounds"]
    assert len(linear) == 2
    pids = []
    for round_ in linear:  # the second round did the work too: DVC's caches did not skip a stage
        assert round_["outcome"] == "passed"
        assert tasks(round_) == [("begin", None), ("end", None), ("middle", None)]
        assert round_["value"] == 7.0  # 1 + sum([1, 2, 3]), computed across the stages' files
        assert round_["overhead_s"] > 0 and round_["compute_s"] >= 3 * 0.05
        pids += [s["pid"] for s in round_["steps"]]
    assert len(set(pids)) == 6, "every stage of every round ran in a process of its own"

    for round_ in benchmarks["test_fanout[dvc]"]["rounds"]:
        assert tasks(round_) == [("begin", None), ("gather", None), ("shard", 0), ("shard", 1), ("shard", 2)]
        assert round_["total"] == 14.0
        starts = {(s["step"], s["index"]): s["start_s"] for s in round_["steps"]}
        assert starts[("begin", None)] < min(starts[("shard", i)] for i in range(3)) < starts[("gather", None)]

    (failed,) = [json.loads(line) for line in (bench.path / "results" / "runs.jsonl").read_text().splitlines()
                 if json.loads(line)["workload"] == "failing"]
    assert failed["outcome"] == "failed"
    assert "this step fails on purpose" in failed["error"]


def test_fan_out_stages_join_the_pipeline_once_their_width_is_known(tmp_path):
    (tmp_path / "out").mkdir()
    pipeline = Pipeline(FANOUT, tmp_path)
    assert pipeline.grow() == ["begin"]  # shard's width is unknown until begin ran
    assert pipeline.grow() == []
    (tmp_path / "out" / "begin.json").write_text(json.dumps({"begun": "b.json", "shards": [5, 6]}))
    pipeline.done.add("begin")
    assert pipeline.grow() == ["shard", "gather"]
    assert pipeline.roots(["shard", "gather"]) == ["shard"]
    shard, gather = pipeline.stages["shard"], pipeline.stages["gather"]
    assert shard["foreach"] == [0, 1]
    assert shard["do"]["outs"] == ["out/shard.${item}.json"]
    assert "--index ${item}" in shard["do"]["cmd"]
    assert gather["deps"] == ["spec.json", "out/shard.0.json", "out/shard.1.json"]
    assert gather["outs"] == ["out/gather.json"]


def test_a_workload_without_fan_out_is_one_wave(tmp_path):
    pipeline = Pipeline(LINEAR, tmp_path)
    assert pipeline.grow() == ["begin", "middle", "end"]
    assert pipeline.stages["end"]["deps"] == ["spec.json", "out/middle.json", "out/begin.json"]
    pipeline.write()
    assert "stages:" in (tmp_path / "dvc.yaml").read_text()
