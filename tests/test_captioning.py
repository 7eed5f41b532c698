"""The captioning workload: scenes, BLEU, shards, the default model, and runs."""
import json
import math
import uuid

import pytest
import torch

from pytest_mlpbench.architectures import RunFailed
from pytest_mlpbench.architectures.base import Run
from pytest_mlpbench.architectures.inprocess import InProcess
from pytest_mlpbench.model.workload import RunSpec
from pytest_mlpbench.step.events import read_events
from workloads.captioning import WORKLOAD, scenes, train
from workloads.captioning.bleu import corpus_bleu
from workloads.captioning.steps import shard_ranges


def test_scenes_are_deterministic_and_captioned():
    images, captions = scenes.generate(50, seed=3)
    again, same = scenes.generate(50, seed=3)
    assert images.shape == (50, 32, 32, 3) and images.dtype.name == "uint8"
    assert (images == again).all() and captions == same
    assert captions != scenes.generate(50, seed=4)[1]
    for caption in captions:
        objects = caption.split(" left of ")
        assert 1 <= len(objects) <= 2
        for obj in objects:
            article, size, colour, shape = obj.split()
            assert (article, size in scenes.SIZES, colour in scenes.COLOURS, shape in scenes.SHAPES) == ("a", True, True, True)


def test_bleu():
    assert corpus_bleu(["a red circle left of a blue square"], ["a red circle left of a blue square"]) == 1.0
    assert corpus_bleu(["a b c d"], ["e f g h"]) == 0.0
    # 1-gram 4/4, 2-gram 2/3, 3-gram 1/2, 4-gram 0/1 -> no 4-gram match anywhere: 0 without smoothing
    assert corpus_bleu(["a b c e"], ["a b c d"]) == 0.0
    # two captions: precisions 8/8, 6/6, 4/4, 2/2 for the identical pair plus a one-word-off pair
    hyp, ref = ["a b c d e", "a b c d x"], ["a b c d e", "a b c d e"]
    p = [9 / 10, 7 / 8, 5 / 6, 3 / 4]
    assert corpus_bleu(hyp, ref) == pytest.approx(math.exp(sum(map(math.log, p)) / 4))
    # too short: brevity penalty exp(1 - 8/4)
    assert corpus_bleu(["a b c d"], ["a b c d e f g h"]) == pytest.approx(math.exp(1 - 2))
    with pytest.raises(ValueError, match="2 hypotheses but 1 references"):
        corpus_bleu(["a", "b"], ["a"])


@pytest.mark.parametrize("images, shards, expected", [
    (10, 3, [[0, 3], [3, 6], [6, 10]]),
    (64, 2, [[0, 32], [32, 64]]),
    (2, 4, [[0, 0], [0, 1], [1, 1], [1, 2]]),  # the width is always `shards`, so static DAGs know it
])
def test_shard_ranges(images, shards, expected):
    assert shard_ranges(images, shards) == expected


def test_scales_declare_the_fanout_width():
    assert WORKLOAD.step("caption").foreach == "shards"
    for params in WORKLOAD.scales.values():
        assert len(shard_ranges(params["images"], params["shards"])) == params["shards"]


def test_shipped_checkpoint_matches_the_code():
    """If this fails, the scenes, the model or the training changed: run
    ``python -m workloads.captioning.train`` and ship the new captioner.pt."""
    assert train.SHIPPED.stat().st_size < 2 * 2**20
    assert torch.load(train.SHIPPED, map_location="cpu")["fingerprint"] == train.fingerprint()
    assert train.default_checkpoint() == train.SHIPPED


TINY = {"scenes": 96, "seed": 5, "epochs": 1, "batch_size": 32, "lr": 3e-3, "length": 12}


def test_training_is_deterministic():
    first, second = train.train(TINY), train.train(TINY)
    assert first["fingerprint"] == second["fingerprint"] != train.fingerprint()
    for name, tensor in first["state_dict"].items():
        assert torch.equal(tensor, second["state_dict"][name]), name


def test_stale_checkpoint_is_retrained_once_into_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MLPBENCH_CACHE", str(tmp_path))
    monkeypatch.setattr(train, "CONFIG", TINY)
    path = train.default_checkpoint()  # the shipped one was made with another config
    assert path == tmp_path / "captioning" / f"captioner-{train.fingerprint(TINY)}.pt"
    made = path.stat().st_mtime_ns
    assert train.default_checkpoint() == path and path.stat().st_mtime_ns == made


def run_inprocess(tmp_path, **params):
    run_id = f"test-{uuid.uuid4().hex[:6]}"
    (tmp_path / "artifacts").mkdir(parents=True)
    spec = RunSpec(workload=WORKLOAD.ref, scale="smoke", run_id=run_id, artifacts=str(tmp_path / "artifacts"),
                   events=str(tmp_path / "events.jsonl"), params=params)
    InProcess().run(WORKLOAD, Run(spec=spec, workload=WORKLOAD, dir=tmp_path))
    return read_events(spec.events, run_id)


def test_workload_captions_scores_and_beats_the_baseline(tmp_path):
    events = run_inprocess(tmp_path, images=30, shards=3)
    assert [(e["step"], e["index"]) for e in events] == [
        ("load_model", None), ("caption", 0), ("caption", 1), ("caption", 2), ("score", None)]
    scores = events[-1]["metrics"]
    assert scores["images"] == 30
    assert scores["exact_match"] >= 0.8 > 0.3 >= scores["baseline_exact_match"]
    assert scores["bleu"] >= 0.9 and scores["baseline_bleu"] < 0.5
    lines = (tmp_path / "artifacts" / "captions.jsonl").read_text().splitlines()
    captions = [json.loads(line) for line in lines]
    assert [c["image"] for c in captions] == list(range(30))
    assert sum(c["caption"] == c["truth"] for c in captions) / 30 == pytest.approx(scores["exact_match"])


def test_hugging_face_model_needs_a_checkpoint_and_transformers(tmp_path):
    (tmp_path / "vit-gpt2").mkdir()
    with pytest.raises(RunFailed, match="not a Hugging Face checkpoint directory"):
        run_inprocess(tmp_path / "not-hf", model=str(tmp_path))
    checkpoint = tmp_path / "vit-gpt2"
    (checkpoint / "config.json").write_text("{}")
    try:
        import transformers  # noqa: F401
    except ImportError:
        with pytest.raises(RunFailed, match="needs the 'transformers' package, which is not installed: pip install"):
            run_inprocess(tmp_path / "no-transformers", model=str(checkpoint))
    else:
        pytest.skip("transformers is installed: its absence cannot be shown")


CAPTION_TEST = """
import pytest

@pytest.mark.inference
def test_captioning(mlpbench):
    mlpbench.run("captioning")
"""


def test_options_set_images_and_shards_on_both_floors(bench):
    bench.tests(CAPTION_TEST)
    result = bench.run("--mlpbench-arch=inprocess,subprocess", "--mlpbench-scale=smoke", "--mlpbench-rounds=1",
                       "--mlpbench-caption-images=12", "--mlpbench-caption-shards=3", "-m", "inference")
    result.assert_outcomes(passed=2)
    runs = bench.runs()
    assert {r["architecture"] for r in runs} == {"inprocess", "subprocess"}
    for run in runs:
        assert run["metrics"]["images"] == 12
        assert sorted(s["index"] for s in run["steps"] if s["step"] == "caption") == [0, 1, 2]
        assert run["metrics"]["exact_match"] > run["metrics"]["baseline_exact_match"]
    subprocess_pids = {s["pid"] for r in runs if r["architecture"] == "subprocess" for s in r["steps"]}
    assert len(subprocess_pids) == 5  # one process per task: load, 3 shards, score


def test_bad_caption_options_are_usage_errors(bench):
    bench.tests(CAPTION_TEST)
    result = bench.run("--mlpbench-caption-shards=0")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlpbench-caption-shards='0': expected a whole number of 1 or more*"])
    result = bench.run("--mlpbench-caption-model=/no/such/model")
    result.stderr.fnmatch_lines(["*--mlpbench-caption-model='/no/such/model': no such directory*"])
