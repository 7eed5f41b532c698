"""Hook specifications that a conftest.py or plugin implements to extend mlpbench."""
import pytest


@pytest.hookspec(historic=True)
def pytest_mlpbench_register(registry):
    """Register architectures and workloads of your own.

    ``registry.add_architecture(name, cls_or_dotted_path, install_hint="")`` and
    ``registry.add_workload(workload_or_ref)``. The options an architecture
    class or a workload declares (its ``options``) join the command line and
    the ini file. Called while pytest reads its options, so implement it in a
    plugin or in a conftest.py that pytest loads at start (the rootdir's, or
    that of a directory given on the command line). Registered architectures
    join every benchmark's parametrization; registered workloads that are not
    built in are run by ``benchmarks/test_workloads.py`` under their own marker.
    """
