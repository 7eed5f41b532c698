"""The batch-inference (captioning) workload on every selected architecture."""
import pytest


@pytest.mark.inference
def test_captioning(mlpbench, request):
    records = mlpbench.run("captioning")
    own_model = request.config.getoption("mlpbench_caption_model") or request.config.getini("mlpbench_caption_model")
    for record in records:
        scores = record.metrics
        assert 0.0 <= scores["exact_match"] <= 1.0 and 0.0 <= scores["bleu"] <= 1.0
        if not own_model:  # the default captioner must beat the trivial baseline clearly
            assert scores["exact_match"] > scores["baseline_exact_match"] + 0.3, scores
            assert scores["bleu"] > scores["baseline_bleu"] + 0.3, scores
