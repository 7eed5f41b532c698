"""The batch-inference (captioning) workload on every selected architecture."""
import pytest


@pytest.mark.inference
def test_captioning(mlpbench):
    records = mlpbench.run("captioning")
    assert records, "no measured round"
    for record in records:
        steps = [s["step"] for s in record.steps]
        assert steps.count("caption") == record.params["shards"], "a caption shard did not report"
        assert steps[0] == "load_model" and steps[-1] == "score"
        scores = record.metrics
        assert 0.0 <= scores["exact_match"] <= 1.0 and 0.0 <= scores["bleu"] <= 1.0
        if not record.params.get("model"):  # the default captioner must beat the trivial baseline clearly
            assert scores["exact_match"] > scores["baseline_exact_match"] + 0.3, scores
            assert scores["bleu"] > scores["baseline_bleu"] + 0.3, scores
