"""Hook specifications that a conftest.py or plugin implements to extend mlpbench."""


def pytest_mlpbench_register(registry):
    """Register architectures and workloads of your own.

    ``registry.add_architecture(name, cls_or_dotted_path, install_hint="")`` and
    ``registry.add_workload(workload_or_ref)``. Registered architectures join
    every benchmark's parametrization; registered workloads that are not built
    in are run by ``benchmarks/test_workloads.py`` under their own marker.
    """
