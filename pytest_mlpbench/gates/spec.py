"""Gate expressions ``METRIC:STAT:THRESHOLD``: parsing and checking them, and
the significance level of the gates' rank test."""
from __future__ import annotations

import re
import statistics
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from pytest_mlpbench.measure.record import FIGURES

STATS: dict[str, Callable[[Sequence[float]], float]] = {
    "min": min,
    "median": statistics.median,
    "mean": statistics.fmean,
    "max": max,
}
_METRIC = re.compile(r"^[A-Za-z_][\w.\->]*$")
_THRESHOLD = re.compile(r"^([+-])(\d+(?:\.\d*)?|\.\d+)(%?)$")


class GateError(ValueError):
    """Bad gate input: an expression, a baseline reference, a saved file or the storage."""


@dataclass(frozen=True)
class Gate:
    metric: str
    stat: str
    #: +1: higher is worse; -1: lower is worse; 0: no threshold (``compare`` without gates)
    sign: int
    limit: float = 0.0
    relative: bool = False
    text: str = ""

    @property
    def threshold(self) -> str:
        return self.text.rsplit(":", 1)[-1] if self.sign else "-"


def parse_gate(text: str) -> Gate:
    """``METRIC:STAT:THRESHOLD``, e.g. ``overhead_s:median:+20%`` or ``accuracy:min:-0.01``."""
    parts = text.strip().split(":")
    if len(parts) != 3:
        raise GateError(f"{text!r} is not METRIC:STAT:THRESHOLD, e.g. overhead_s:median:+20% or accuracy:min:-0.01")
    metric, stat, threshold = (p.strip() for p in parts)
    if not _METRIC.match(metric):
        raise GateError(f"METRIC {metric!r} is not a figure name; figures: {', '.join(FIGURES)} or a workload metric")
    if stat not in STATS:
        raise GateError(f"STAT {stat!r} is not one of {', '.join(STATS)}")
    found = _THRESHOLD.match(threshold)
    if not found:
        raise GateError(
            f"THRESHOLD {threshold!r} must be a signed number, optionally a percentage: +10% or +0.5 "
            "(an increase is worse), -2% or -0.01 (a decrease is worse)"
        )
    sign, number, percent = found.groups()
    return Gate(metric, stat, 1 if sign == "+" else -1, float(number), bool(percent), f"{metric}:{stat}:{threshold}")


def significance_level(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise ValueError("must be between 0 and 1, e.g. 0.05")
    return value


def parse_gates(texts: Iterable[str], source: str) -> list[Gate]:
    try:
        return [parse_gate(t) for t in texts]
    except GateError as exc:
        raise GateError(f"{source}: {exc}") from None
