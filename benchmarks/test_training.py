"""The training workload on every selected architecture."""
import pytest

#: Ten classes: chance is 0.1. The generated data is learnable at every scale
#: (0.3 is well under what smoke reaches); a real dataset at the smoke scale
#: (512 images, one epoch) is held only to clearly above chance.
MIN_ACCURACY = {"generated": 0.3, "dataset": 0.15}


@pytest.mark.training
def test_training(mlpbench):
    records = mlpbench.run("training")
    assert records, "no measured round"
    for record in records:
        assert [s["step"] for s in record.steps] == ["prepare", "train", "evaluate"], "a step did not report"
        assert 0 < record.metrics["train_images"] <= record.params["train_images"]  # a dataset may hold fewer
        data = "dataset" if record.params.get("data_dir") else "generated"
        assert record.metrics["accuracy"] > MIN_ACCURACY[data], f"the network learned too little on {data} data"
