"""What can be benchmarked: architectures (lazy entries) and workloads, with
the options each declares.

Built in, from installed packages' entry points (groups ``mlpbench.architectures``
and ``mlpbench.workloads``), and from ``pytest_mlpbench_register`` hooks.
"""
from __future__ import annotations

from importlib import metadata

from pytest_mlpbench.architectures.base import Unavailable
from pytest_mlpbench.architectures.registry import BUILTIN, Entry
from pytest_mlpbench.model.workload import Workload, WorkloadError, load_workload
from pytest_mlpbench.options import OptionSet

BUILTIN_WORKLOADS = ["workloads.training:WORKLOAD", "workloads.captioning:WORKLOAD",
                     "workloads.windmill:LIGHT", "workloads.windmill:LONG"]
ARCHITECTURE_GROUP = "mlpbench.architectures"
WORKLOAD_GROUP = "mlpbench.workloads"


class Registry:
    def __init__(self, options: OptionSet | None = None):
        self.options = options
        self.architectures: dict[str, Entry] = {}
        self.workloads: dict[str, Workload] = {}

    @classmethod
    def builtin(cls, options: OptionSet | None = None) -> "Registry":
        registry = cls(options)
        for entry in BUILTIN:
            registry._add(entry)
        for ref in BUILTIN_WORKLOADS:
            registry.add_workload(ref, builtin=True)
        from workloads.scaling import OPTIONS as SCALING  # sized by name when run: no workload to register

        registry._declare(SCALING, "the scaling sweeps")
        return registry

    def add_entry_points(self) -> None:
        """Architectures and workloads that installed packages declare."""
        for ep in metadata.entry_points(group=ARCHITECTURE_GROUP):
            self._add(Entry(ep.name, ep.value, f"it comes from package {_package(ep)}"))
        for ep in metadata.entry_points(group=WORKLOAD_GROUP):
            try:
                self.add_workload(ep.value)
            except WorkloadError as exc:
                raise WorkloadError(f"entry point {ep.name} = {ep.value} of package {_package(ep)}: {exc}") from None

    def add_architecture(self, name: str, target, install_hint: str = "") -> None:
        self._add(Entry(name, target, install_hint))

    def _add(self, entry: Entry) -> None:
        self.architectures[entry.name] = entry
        try:
            cls = entry.load()
        except Unavailable:
            return  # skipped with the reason when selected; it declares no options
        self._declare(cls.options, f"architecture {entry.name!r}")

    def add_workload(self, workload: Workload | str, builtin: bool = False) -> None:
        if isinstance(workload, str):
            workload = load_workload(workload)
        if builtin and not workload.builtin:
            raise WorkloadError(f"{workload.ref}: built-in workloads set builtin=True")
        self.workloads[workload.name] = workload
        self._declare(workload.options, f"workload {workload.name!r}")

    def _declare(self, options, owner: str) -> None:
        if self.options is not None:
            self.options.add(options, owner)

    def workload(self, name: str) -> Workload:
        try:
            return self.workloads[name]
        except KeyError:
            raise WorkloadError(f"unknown workload {name!r}; registered: {', '.join(sorted(self.workloads))}") from None


def _package(ep: metadata.EntryPoint) -> str:
    return ep.dist.name if ep.dist else "?"
