"""For people working in this repository: the generated side of the
hand-written comparison (docs/handwritten.md) as a benchmark of its own.

``pytest benchmarks -m handwritten --mlpbench-arch=dvc,metaflow-local`` runs
``chain-20``, the twenty light tasks that ``benchmarks/handwritten/`` writes
by hand in each framework's idiom, on the architectures named, with the
harness's rounds, report and gates. It is also the example of a workload
registered from a conftest.py (README, "Your own architectures and workloads").
"""

from workloads import scaling

CHAIN_20 = scaling.chain(20).replace(marker="handwritten", builtin=False)


def pytest_mlpbench_register(registry):
    registry.add_workload(CHAIN_20)
