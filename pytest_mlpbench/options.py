"""The plugin's options: one definition each, shared by the command line and
the ini file, and one resolver that turns them into checked settings."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from .workload import SCALES


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError("must be 1 or more")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be 0 or more")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError("must be more than 0")
    return value


def choice(*valid: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in valid:
            raise ValueError(f"valid values are {', '.join(valid)}")
        return text

    return parse


def names(text: str) -> list[str]:
    found = [n.strip() for n in text.split(",") if n.strip()]
    if not found:
        raise ValueError("expected a comma-separated list of names")
    return found


def existing_dir(text: str) -> str:
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isdir(path):
        raise ValueError(f"no such directory: {path}")
    return path


@dataclass(frozen=True)
class Option:
    name: str  # --mlpbench-NAME on the command line, mlpbench_NAME in the ini file
    help: str
    parse: Callable[[str], Any] = str
    default: Any = None
    metavar: str | None = None

    @property
    def flag(self) -> str:
        return "--mlpbench-" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return "mlpbench_" + self.name


OPTIONS = [
    Option("arch", "Architectures to run, comma-separated (default: every registered one; "
           "those that cannot run here are skipped with the reason).", names, None, "NAMES"),
    Option("scale", "Workload size: smoke, small or full (default: small).", choice(*SCALES), "small", "SCALE"),
    Option("rounds", "Measured runs per benchmark (default: 3).", positive_int, 3, "N"),
    Option("warmup", "Unrecorded runs before the measured ones (default: 1).", non_negative_int, 1, "N"),
    Option("sample_interval", "Seconds between samples of the process tree (default: 0.1).",
           positive_float, 0.1, "SECONDS"),
    Option("results", "Directory for run records, CSV, summary and plots (default: results).", str, "results", "DIR"),
    Option("timeout", "Seconds one run may take before its processes are killed and it is "
           "recorded as timed out (default: no limit).", positive_float, None, "SECONDS"),
    Option("data_dir", "Directory with real data for the workloads, e.g. a CIFAR-10 "
           "'cifar-10-batches-py' directory (default: generated data).", existing_dir, None, "DIR"),
    # -- options of the framework architectures follow, one block per framework --
]


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("mlpbench", "mlpbench: ML pipeline architecture benchmarks")
    for opt in OPTIONS:
        group.addoption(opt.flag, dest=opt.dest, metavar=opt.metavar, default=None, help=opt.help)
        parser.addini(opt.dest, opt.help)


class Settings:
    """Resolved option values: command line over ini over default."""

    def __init__(self, values: dict[str, Any]):
        self._values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, name: str, default: Any = None) -> Any:
        return self._values.get(name, default)

    @classmethod
    def from_config(cls, config: pytest.Config) -> "Settings":
        values = {}
        for opt in OPTIONS:
            raw, source = config.getoption(opt.dest), opt.flag
            if raw is None:
                raw, source = config.getini(opt.dest) or None, f"ini {opt.dest}"
            if raw is None:
                values[opt.name] = opt.default
                continue
            try:
                values[opt.name] = opt.parse(str(raw).strip())
            except ValueError as exc:
                raise pytest.UsageError(f"{source}={raw!r}: {exc}") from None
        return cls(values)
