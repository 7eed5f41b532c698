"""``mlpbench report|compare|history ...`` (also ``python -m pytest_mlpbench``): work on saved results."""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "report": ("pytest_mlpbench.results.report", "main", "rebuild results/report.md and plots from saved files"),
    "compare": ("pytest_mlpbench.gates.compare", "main", "compare saved pytest-benchmark runs, metric by metric"),
    "history": ("pytest_mlpbench.results.history", "main",
                "trend plots of every figure across the saved runs, each marked with the gates' verdict"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: mlpbench {report,compare,history} [ARGS...]", file=sys.stderr)
        for name, (_, _, text) in COMMANDS.items():
            print(f"  {name:8} {text}", file=sys.stderr)
        return 2
    module_name, func, _ = COMMANDS[argv[0]]
    return getattr(importlib.import_module(module_name), func)(argv[1:])
