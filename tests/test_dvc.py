"""The dvc architecture: real `dvc repro` runs of the fake workloads."""
import json
from importlib.util import find_spec

import pytest
from conftest import bench_source
from fakes import FANOUT, LINEAR

from pytest_mlpbench.architectures.dvc import Pipeline  # imports no dvc until used

pytestmark = pytest.mark.skipif(find_spec("dvc") is None, reason="dvc is not installed")

NATIVE_TESTS = '''

import json
from pathlib import Path

from ruamel.yaml import YAML

from fakes import FILES_FANOUT
from workloads import scaling


def dvc_cache(mlpbench, records):
    """Write what DVC's cache holds of each task's directory in each round, as its dvc.lock names them."""
    session = mlpbench.session
    cache = session.architecture(mlpbench.arch_name).project / ".dvc" / "cache" / "files" / "md5"
    found = []
    for record in records:
        lock = YAML(typ="safe").load(session.session_dir / "runs" / record.run_id / "dvc" / "dvc.lock")
        dirs = {}
        for stage in lock["stages"].values():
            for out in stage["outs"]:
                if out["path"].startswith("files/"):
                    listing = json.loads((cache / out["md5"][:2] / out["md5"][2:]).read_text())
                    dirs[out["path"][len("files/"):]] = {
                        e["relpath"]: (cache / e["md5"][:2] / e["md5"][2:]).stat().st_size for e in listing}
        found.append(dirs)
    Path(f"dvc-cache-{records[0].workload}.json").write_text(json.dumps(found))


def test_handoff_native(mlpbench):
    dvc_cache(mlpbench, mlpbench.run(scaling.handoff(2**20, "native")))


def test_fanout_files(mlpbench):
    dvc_cache(mlpbench, mlpbench.run(FILES_FANOUT))
'''

DVC_TESTS = bench_source("linear", "fanout", "failing") + NATIVE_TESTS


def tasks(round_):
    return sorted((s["step"], s["index"]) for s in round_["steps"])


def test_every_round_runs_every_stage_fan_out_and_failures(bench):
    bench.tests(DVC_TESTS)
    result = bench.run("--mlpbench-arch=dvc", "--mlpbench-rounds=2", "--mlpbench-scale=smoke", "-v")
    result.stdout.fnmatch_lines(["*test_linear[[]dvc[]] PASSED*", "*test_fanout[[]dvc[]] PASSED*",
                                 "*test_failing[[]dvc[]] FAILED*", "*test_handoff_native[[]dvc[]] PASSED*",
                                 "*test_fanout_files[[]dvc[]] PASSED*"])
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
    assert_native_handoff(bench)


def assert_native_handoff(bench):
    """Native hand-off: every task's directory is an out of its stage, in DVC's cache at its size."""
    runs = {}
    for record in bench.runs():
        runs.setdefault(record["workload"], []).append(record)
    shards = {f"shard.{i}": {"part.bin": (i + 1) * 1024} for i in range(3)}
    expected = {"handoff-native-1048576": (2**20, {"write": {"handoff.bin": 2**20}, "read": {}}),
                "fanout-files": ((1 + 2 + 3) * 1024, {"begin": {"seed.bin": 100}, "gather": {}, **shards})}
    for workload, (size, cached) in expected.items():
        assert [(r["outcome"], r["handoff"], r["metrics"]["bytes_read"]) for r in runs[workload]] == [
            ("passed", "native", size)] * 2
        written = sum(n for files in cached.values() for n in files.values())
        assert [r["artifact_bytes"] for r in runs[workload]] == [written] * 2  # moved into the run's artifacts
        assert json.loads((bench.path / f"dvc-cache-{workload}.json").read_text()) == [cached] * 2


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


def test_native_stages_own_their_task_directories_and_depend_on_their_producers(tmp_path):
    (tmp_path / "out").mkdir()
    pipeline = Pipeline(FANOUT, tmp_path, native=True)
    pipeline.grow()
    (tmp_path / "out" / "begin.json").write_text(json.dumps({"begun": "b.json", "shards": [5, 6]}))
    pipeline.done.add("begin")
    pipeline.grow()
    shard, gather = pipeline.stages["shard"]["do"], pipeline.stages["gather"]
    assert pipeline.stages["begin"]["outs"] == ["out/begin.json", "files/begin"]
    assert shard["outs"] == ["out/shard.${item}.json", "files/shard.${item}"]
    assert shard["deps"] == ["spec.json", "out/begin.json", "files/begin"]
    assert f"--carried=begin={tmp_path}/files/begin" in shard["cmd"]
    assert shard["cmd"].endswith(f"--artifacts {tmp_path}/files/shard.${{item}}")
    assert gather["deps"][-2:] == ["files/shard.0", "files/shard.1"]
    assert f"--carried=shard.1={tmp_path}/files/shard.1" in gather["cmd"]
