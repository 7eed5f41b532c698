"""The gates' statistics: a one-sided Mann-Whitney U rank test over per-round
values, and the smallest p-value it can reach with a given number of rounds."""
from __future__ import annotations

import math
import warnings
from typing import Sequence

from pytest_mlpbench.gates.spec import GateError

#: Exact permutation distribution up to this many splits (ties make scipy's
#: "auto" method fall back to a normal approximation that is too eager for
#: a handful of rounds).
_EXACT_SPLITS = 20000


def smallest_p(n_now: int, n_base: int) -> float:
    """The smallest p-value a one-sided rank test can give with these sample sizes."""
    return 1.0 / math.comb(n_now + n_base, n_now)


def require_scipy() -> None:
    try:
        import scipy.stats  # noqa: F401
    except ImportError as exc:
        raise GateError(f"the gates' rank test needs scipy ({exc}); install it with: pip install scipy") from None


def rank_test(now: Sequence[float], base: Sequence[float], alternative: str) -> float:
    from scipy.stats import PermutationMethod, mannwhitneyu

    method = "auto"
    if len(set(now) | set(base)) < len(now) + len(base) and math.comb(len(now) + len(base), len(now)) <= _EXACT_SPLITS:
        method = PermutationMethod(n_resamples=_EXACT_SPLITS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(mannwhitneyu(now, base, alternative=alternative, method=method).pvalue)
    return 1.0 if math.isnan(p) else p
