"""Corpus BLEU (Papineni et al. 2002) with one reference per caption: the
geometric mean of clipped 1..4-gram precisions over the whole corpus, times
the brevity penalty. No smoothing: a corpus with no matching 4-gram scores 0."""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[str], max_n: int = 4) -> float:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for hyp, ref in zip(hypotheses, references):
        hyp_words, ref_words = hyp.split(), ref.split()
        hyp_len, ref_len = hyp_len + len(hyp_words), ref_len + len(ref_words)
        for n in range(1, max_n + 1):
            hyp_grams, ref_grams = _ngrams(hyp_words, n), _ngrams(ref_words, n)
            matches[n - 1] += sum(min(c, ref_grams[g]) for g, c in hyp_grams.items())
            totals[n - 1] += max(len(hyp_words) - n + 1, 0)
    if hyp_len == 0 or min(matches) == 0:
        return 0.0
    log_precision = sum(math.log(m / t) for m, t in zip(matches, totals)) / max_n
    brevity = 1.0 if hyp_len > ref_len else math.exp(1 - ref_len / hyp_len)
    return brevity * math.exp(log_precision)
