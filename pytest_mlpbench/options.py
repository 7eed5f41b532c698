"""Options: one definition each, shared by the command line and the ini file.

The core declares only its own (``CORE``). The gates, the sinks, and every
architecture and workload declare theirs beside their code (an ``options``
attribute); :class:`OptionSet` adds each to pytest once, and resolves them
all into checked :class:`Settings`. Light to import: no pytest at import time,
so a workload module may declare options and still load in a step process.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable

from pytest_mlpbench.model.value import Frozen
from pytest_mlpbench.model.workload import SCALES

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing typing costs every task's process 3 ms
    from typing import Any


def _number(text: str, kind: type, low: float, inclusive: bool, what: str):
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"expected {what}") from None
    if not math.isfinite(value) or value < low or (value == low and not inclusive):
        raise ValueError(f"expected {what}")
    return value


def positive_int(text: str) -> int:
    return _number(text, int, 1, True, "a whole number of 1 or more")


def non_negative_int(text: str) -> int:
    return _number(text, int, 0, True, "a whole number of 0 or more")


def positive_float(text: str) -> float:
    return _number(text, float, 0, False, "a number of seconds greater than 0")


#: The default per-run time limit, by scale: far above any run measured here at that scale,
#: so that a hung run fails instead of holding CI until its own limit.
AUTO_TIMEOUT_S = {"smoke": 600.0, "small": 1800.0, "full": 4 * 3600.0}


def timeout(text: str) -> float | str | None:
    """Seconds, ``auto`` (by scale) or ``none``/``0`` (no limit)."""
    word = text.lower()
    if word == "auto":
        return word
    if word in ("none", "0"):
        return None
    return _number(text, float, 0, False, "a number of seconds greater than 0, auto, or none")


def choice(*valid: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in valid:
            raise ValueError(f"valid values are {', '.join(valid)}")
        return text

    return parse


def yes_no(text: str) -> bool:
    if text.lower() not in ("yes", "no", "true", "false", "1", "0"):
        raise ValueError("expected yes or no")
    return text.lower() in ("yes", "true", "1")


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


def new_file(text: str) -> str:
    path = os.path.abspath(os.path.expanduser(text))
    if not os.path.isdir(os.path.dirname(path)):
        raise ValueError(f"no such directory: {os.path.dirname(path)}")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory")
    return path


class Option(Frozen):
    """``--mlpbench-NAME`` on the command line, ``mlpbench_NAME`` in the ini file. ``multiple``:
    repeatable on the command line, one value a line in the ini file, and the setting is then the
    list of parsed values (default: empty). ``param``: for a workload's option, the scale
    parameter it overrides when set."""

    def __init__(self, name: str, help: str, parse: Callable[[str], Any] = str, default: Any = None,
                 metavar: str | None = None, multiple: bool = False, param: str | None = None):
        self.name = name
        self.help = help
        self.parse = parse
        self.default = default
        self.metavar = metavar
        self.multiple = multiple
        self.param = param

    @property
    def flag(self) -> str:
        return "--mlpbench-" + self.name.replace("_", "-")

    @property
    def dest(self) -> str:
        return "mlpbench_" + self.name



CORE = [
    Option("arch", "Architectures to run, comma-separated (default: every registered one; "
           "those that cannot run here are skipped with the reason).", names, None, "NAMES"),
    Option("scale", "Workload size: smoke, small or full (default: small).", choice(*SCALES), "small", "SCALE"),
    Option("rounds", "Measured runs per benchmark (default: 3).", positive_int, 3, "N"),
    Option("warmup", "Unrecorded runs before the measured ones (default: 1).", non_negative_int, 1, "N"),
    Option("sample_interval", "Seconds between samples of the process tree (default: 0.1).",
           positive_float, 0.1, "SECONDS"),
    Option("results", "Directory for run records, CSV, summary and plots (default: results).", str, "results", "DIR"),
    Option("timeout", "Seconds one run may take before its processes are killed and it is recorded as timed "
           "out; 'none' (or 0) for no limit (default: auto, by scale: " +
           ", ".join(f"{s:g} s {scale}" for scale, s in AUTO_TIMEOUT_S.items()) + ").",
           timeout, "auto", "SECONDS|auto|none"),
    Option("data_dir", "Directory with real data for the workloads, e.g. a CIFAR-10 "
           "'cifar-10-batches-py' directory (default: generated data).", existing_dir, None, "DIR"),
    Option("keep_artifacts", "Keep every run's artifacts (data, models, captions) under "
           "RESULTS/artifacts/RUN_ID (default: no).", yes_no, False, "yes|no"),
]


class OptionSet:
    """Every declared option, each added to pytest's parser and ini once."""

    def __init__(self, parser=None):
        self.parser = parser  # None: only collect them
        self.group = parser.getgroup("mlpbench", "mlpbench: ML pipeline architecture benchmarks") if parser else None
        self.options: dict[str, Option] = {}
        self.owners: dict[str, str] = {}

    def add(self, options, owner: str) -> None:
        """Declare ``options`` for ``owner``; the same option again (shared by
        several architectures) is declared once, a different one under a taken
        name is an error."""
        for opt in options:
            known = self.options.get(opt.name)
            if known is not None:
                if known != opt:
                    from pytest import UsageError

                    raise UsageError(f"{owner} declares option {opt.flag}, which {self.owners[opt.name]} "
                                     "already declares differently")
                continue
            self.options[opt.name], self.owners[opt.name] = opt, owner
            if self.parser is None:
                continue
            action = "append" if opt.multiple else "store"
            self.group.addoption(opt.flag, dest=opt.dest, metavar=opt.metavar, default=None, action=action,
                                 help=opt.help.replace("%", "%%"))  # argparse %-formats help texts
            self.parser.addini(opt.dest, opt.help, type="linelist" if opt.multiple else None)

    def settings(self, config) -> "Settings":
        return Settings.from_config(config, self.options.values())

    def defaults(self, **values) -> "Settings":
        """Every option at its default, except ``values``: settings for using
        architectures outside pytest."""
        return Settings({**{o.name: [] if o.multiple else o.default for o in self.options.values()}, **values})


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
    def from_config(cls, config, options) -> "Settings":
        values = {}
        for opt in options:
            raw, source = config.getoption(opt.dest), opt.flag
            if raw is None:
                raw, source = config.getini(opt.dest) or None, f"ini {opt.dest}"
            if opt.multiple:
                values[opt.name] = [_parse(opt, item, source) for item in raw or []]
            elif raw is None:
                values[opt.name] = opt.default
            else:
                values[opt.name] = _parse(opt, raw, source)
        return cls(values)


def _parse(opt: Option, raw: str, source: str) -> Any:
    try:
        return opt.parse(str(raw).strip())
    except ValueError as exc:
        from pytest import UsageError

        raise UsageError(f"{source}={raw!r}: {exc}") from None
