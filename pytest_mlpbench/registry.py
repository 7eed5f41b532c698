"""What can be benchmarked: architectures (lazy entries) and workloads."""
from __future__ import annotations

from .architectures import BUILTIN, Entry
from .workload import Workload, WorkloadError, load_workload

BUILTIN_WORKLOADS = ["workloads.training:WORKLOAD", "workloads.captioning:WORKLOAD"]


class Registry:
    def __init__(self):
        self.architectures: dict[str, Entry] = {}
        self.workloads: dict[str, Workload] = {}

    @classmethod
    def builtin(cls) -> "Registry":
        registry = cls()
        for entry in BUILTIN:
            registry.architectures[entry.name] = entry
        for ref in BUILTIN_WORKLOADS:
            registry.add_workload(ref, builtin=True)
        return registry

    def add_architecture(self, name: str, target, install_hint: str = "") -> None:
        self.architectures[name] = Entry(name, target, install_hint)

    def add_workload(self, workload: Workload | str, builtin: bool = False) -> None:
        if isinstance(workload, str):
            workload = load_workload(workload)
        if builtin and not workload.builtin:
            raise WorkloadError(f"{workload.ref}: built-in workloads set builtin=True")
        self.workloads[workload.name] = workload

    def workload(self, name: str) -> Workload:
        try:
            return self.workloads[name]
        except KeyError:
            raise WorkloadError(f"unknown workload {name!r}; registered: {', '.join(sorted(self.workloads))}") from None
