"""The training workload on every selected architecture."""
import pytest


@pytest.mark.training
def test_training(mlpbench):
    records = mlpbench.run("training")
    assert all(r.metrics["accuracy"] > 0.1 for r in records), "the network learned nothing"
