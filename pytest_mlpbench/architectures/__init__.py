"""Architectures: one module or folder per framework, each a subclass of
:class:`~pytest_mlpbench.architectures.base.Architecture` that declares its own options."""
from pytest_mlpbench.architectures.base import Architecture, RunFailed, RunTimeout, Unavailable

__all__ = ["Architecture", "RunFailed", "RunTimeout", "Unavailable"]
