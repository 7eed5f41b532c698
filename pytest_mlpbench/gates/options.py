"""The gates' options (``--mlpbench-fail`` and the others); settings keep their
names: ``settings.fail``, ``settings.baseline``, ..."""
from __future__ import annotations

from pytest_mlpbench.gates.spec import parse_gate, significance_level
from pytest_mlpbench.options import Option, positive_int, yes_no

OPTIONS: list[Option] = [
    Option("fail", "Regression gate METRIC:STAT:THRESHOLD on any figure of the run record, repeatable, e.g. "
           "overhead_s:median:+20%, peak_rss_bytes:max:+10%, accuracy:min:-0.01 (STAT: min, median, mean, max; "
           "THRESHOLD: +N% or +N allowed increase, -N% or -N allowed decrease). Fails only on a significant "
           "change against the saved pytest-benchmark history.", parse_gate, None, "METRIC:STAT:THRESHOLD",
           multiple=True),
    Option("baseline", "Saved run to gate against: number, save name or file path (default: the latest "
           "saved run in --benchmark-storage for this machine).", str, None, "RUN"),
    Option("history", "Pool the per-round values of the N latest saved runs as the baseline (default: 1).",
           positive_int, 1, "N"),
    Option("alpha", "Significance level of the gates' one-sided rank test (default: 0.05).",
           significance_level, 0.05, "P"),
    Option("compare_unlike", "Gate also against saved runs that differ from this one in workload, scale, workload "
           "parameters, data source or machine, or that predate their recording, saying how (default: no: those "
           "are left out and a benchmark without a like baseline passes as new, with the reason).",
           yes_no, False, "yes|no"),
]
