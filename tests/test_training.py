"""The training workload: its data, and the benchmark suite run for real."""
import json
import pickle

import numpy as np
import pytest

from workloads.training import data

REPO = __import__("pathlib").Path(__file__).parents[1]


def test_generated_data_is_deterministic_and_has_every_class():
    x1, y1 = data.generate(200, seed=0, split_seed=1)
    x2, y2 = data.generate(200, seed=0, split_seed=1)
    assert x1.shape == (200, 32, 32, 3) and x1.dtype == np.uint8
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2)
    assert set(y1) == set(range(10))
    assert not np.array_equal(data.generate(200, seed=0, split_seed=2)[0], x1)


def write_cifar(folder, batches=5, per_batch=20):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, batches + 1)] + ["test_batch"]:
        batch = {"data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8), "labels": list(range(10)) * 2}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)


def test_reads_cifar_in_torchvision_format(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    (train_x, train_y), (test_x, test_y) = data.load_cifar(str(tmp_path), 50, 15)
    assert train_x.shape == (50, 32, 32, 3) and len(train_y) == 50
    assert test_x.shape == (15, 32, 32, 3) and list(test_y[:10]) == list(range(10))


def test_a_directory_without_cifar_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a CIFAR-10 directory: expected data_batch_1..5 and test_batch"):
        data.load_cifar(str(tmp_path), 10, 10)


def test_training_suite_runs_on_the_baselines(pytester):
    pytester.makepyfile(test_training=(REPO / "benchmarks" / "test_training.py").read_text())
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-m", "training", "--mlpbench-arch=inprocess,subprocess", "--mlpbench-scale=smoke",
        "--mlpbench-rounds=1", "--mlpbench-warmup=0", "--benchmark-json=bench.json", "-v",
    )
    result.stdout.fnmatch_lines(["*test_training[[]inprocess[]] PASSED*", "*test_training[[]subprocess[]] PASSED*"])
    for bench in json.loads((pytester.path / "bench.json").read_text())["benchmarks"]:
        (round_,) = bench["extra_info"]["mlpbench"]["rounds"]
        assert round_["accuracy"] > 0.3  # ten classes: chance is 0.1
        assert [s["step"] for s in round_["steps"]] == ["prepare", "train", "evaluate"]
        assert round_["artifact_bytes"] > 0


def test_training_reads_a_data_dir(pytester, tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py", per_batch=20)
    suite = (REPO / "benchmarks" / "test_training.py").read_text()
    assert '"dataset": 0.15' in suite
    pytester.makepyfile(test_training=suite.replace('"dataset": 0.15', '"dataset": -1.0'))  # random pixels: no accuracy
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--mlpbench-arch=inprocess", "--mlpbench-scale=smoke", "--mlpbench-rounds=1",
        "--mlpbench-warmup=0", f"--mlpbench-data-dir={tmp_path}", "--benchmark-json=bench.json",
    )
    result.assert_outcomes(passed=1)
    (bench,) = json.loads((pytester.path / "bench.json").read_text())["benchmarks"]
    assert bench["extra_info"]["mlpbench"]["median"]["train_images"] == 5 * 20  # all of the directory's images
