"""The architecture registry: name -> dotted class path, imported lazily.

A missing framework SDK makes only that architecture unavailable (its test is
skipped with the install hint); it never breaks the plugin.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass

from .base import Architecture, RunFailed, RunTimeout, Unavailable

__all__ = ["Architecture", "Entry", "RunFailed", "RunTimeout", "Unavailable", "BUILTIN"]


@dataclass(frozen=True)
class Entry:
    name: str
    target: str | type  # "package.module:Class" or the class itself
    install_hint: str = ""

    def load(self) -> type[Architecture]:
        if not isinstance(self.target, str):
            return self.target
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            hint = f"; {self.install_hint}" if self.install_hint else ""
            raise Unavailable(f"{self.name}: cannot import {module_name} ({exc}){hint}") from exc
        return getattr(module, attr)


_EXTRAS = "pip install -r requirements/frameworks.txt"

BUILTIN = [
    Entry("inprocess", "pytest_mlpbench.architectures.inprocess:InProcess"),
    Entry("subprocess", "pytest_mlpbench.architectures.subprocesses:Subprocesses"),
]
