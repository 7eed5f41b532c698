"""pytest-mlpbench: ML pipeline architecture benchmarks as pytest tests."""
from pytest_mlpbench.architectures import Architecture, RunFailed, RunTimeout, Unavailable
from pytest_mlpbench.model.workload import RunSpec, Step, StepContext, Workload

__version__ = "0.1.0"
__all__ = ["Architecture", "RunFailed", "RunTimeout", "RunSpec", "Step", "StepContext", "Unavailable", "Workload"]
