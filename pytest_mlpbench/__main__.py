"""``python -m pytest_mlpbench report|compare ...``: work on saved results."""
from __future__ import annotations

import sys

COMMANDS = {
    "report": ("pytest_mlpbench.comparison", "main", "rebuild results/report.md and plots from saved files"),
    "compare": ("pytest_mlpbench.gates", "compare_main", "compare saved pytest-benchmark runs, metric by metric"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print("usage: python -m pytest_mlpbench {report,compare} [ARGS...]", file=sys.stderr)
        for name, (_, _, text) in COMMANDS.items():
            print(f"  {name:8} {text}", file=sys.stderr)
        return 2
    module_name, func, _ = COMMANDS[argv[0]]
    module = __import__(module_name, fromlist=[func])
    return getattr(module, func)(argv[1:])


if __name__ == "__main__":
    sys.exit(main())
