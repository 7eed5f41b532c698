"""Workloads registered by a conftest.py or plugin through
``pytest_mlpbench_register``, each under its own marker, on every architecture."""


def test_workload(mlpbench, mlpbench_workload):
    mlpbench.run(mlpbench_workload)
