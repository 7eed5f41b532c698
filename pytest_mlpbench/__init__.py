"""pytest-mlpbench: ML pipeline architecture benchmarks as pytest tests."""
import importlib

__version__ = "0.1.0"
__all__ = ["Architecture", "RunFailed", "RunTimeout", "RunSpec", "Step", "StepContext", "Unavailable", "Workload"]

# Imported on first use, so that a step's own process (``python -m pytest_mlpbench.step``, once per task)
# does not load the architectures it never uses.
_HOMES = {"Architecture": "architectures.base", "RunFailed": "architectures.base", "RunTimeout": "architectures.base",
          "Unavailable": "architectures.base", "RunSpec": "model.workload", "Step": "model.workload",
          "StepContext": "model.workload", "Workload": "model.workload"}


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module 'pytest_mlpbench' has no attribute {name!r}")
    return getattr(importlib.import_module(f"pytest_mlpbench.{_HOMES[name]}"), name)
