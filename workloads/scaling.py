"""Synthetic workloads for scaling sweeps: what a task, a parallel task and a
byte handed between steps cost each architecture.

- ``chain-N``: N light tasks, one after another.
- ``fanout-W`` and ``fanout-cpu-W``: begin -> W tasks side by side -> gather;
  the tasks are light, or each burns ``busy_s`` of CPU.
- ``handoff-S``: one step writes S bytes, the next reads them, through the
  run's shared directory; ``handoff-native-S``: through each framework's own
  data layer (see ``pytest_mlpbench.step.handoff``).

The size is in the name, and a step process finds the workload again from its
ref alone: ``workloads.scaling:chain_16`` is made on import by this module's
``__getattr__``; :func:`workload` makes one from its name.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path

from pytest_mlpbench.model.workload import Step, Workload, WorkloadError
from pytest_mlpbench.options import Option

HERE = "workloads.scaling"
SCALES = ("smoke", "small", "full")
BUSY_S = {"smoke": 0.2, "small": 0.5, "full": 1.0}  # each CPU-bound fan-out task's CPU time
CHUNK = 1 << 20
NAME = re.compile(r"^(chain|fanout|fanout-cpu|handoff|handoff-native)-(\d+)$")
UNITS = {"": 1, "B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}


def counts(text: str) -> list[int]:
    """``1,4,16``: whole numbers of 1 or more."""
    return [_size(part, {"": 1}) for part in text.split(",")]


def byte_sizes(text: str) -> list[int]:
    """``1MiB,64MiB``: bytes, with an optional unit B, KiB, MiB or GiB."""
    return [_size(part, UNITS) for part in text.split(",")]


def _size(text: str, units: dict[str, int]) -> int:
    found = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not found or found[2] not in units or int(found[1]) < 1:
        raise ValueError("expected comma-separated whole numbers of 1 or more"
                         + (f", each with an optional unit ({', '.join(u for u in units if u)})" if len(units) > 1 else "")
                         + f", not {text.strip()!r}")
    return int(found[1]) * units[found[2]]


def modes(text: str) -> list[str]:
    found = [part.strip() for part in text.split(",")]
    wrong = [m for m in found if m not in ("shared", "native")]
    if wrong or not found:
        raise ValueError(f"expected shared, native or both, comma-separated, not {text.strip()!r}")
    return list(dict.fromkeys(found))


OPTIONS = (
    Option("chain_sizes", "Scaling sweep: the lengths of the chains of light tasks (default: 1,4,16,64).",
           counts, [1, 4, 16, 64], "N,N,..."),
    Option("fanout_widths", "Scaling sweep: the widths of the fan-outs (default: 1,2,4,16).",
           counts, [1, 2, 4, 16], "W,W,..."),
    Option("handoff_sizes", "Scaling sweep: the bytes one step hands the next (default: 1MiB,64MiB,512MiB).",
           byte_sizes, [2**20, 64 * 2**20, 512 * 2**20], "SIZE,SIZE,..."),
    Option("handoff_modes", "Scaling sweep: how the hand-offs carry their bytes: shared (one directory every step "
           "sees), native (each framework's own data layer) (default: shared,native).",
           modes, ["shared", "native"], "MODE,MODE"),
)


def light(ctx, **inputs) -> dict:
    return {}


def begin(ctx) -> dict:
    return {"tasks": list(range(ctx.params["width"]))}


def task(ctx, item) -> dict:
    deadline = time.process_time() + ctx.params.get("busy_s", 0.0)
    while time.process_time() < deadline:
        pass
    return {"done": item}


def gather(ctx, done) -> dict:
    ctx.metric("tasks", float(len(done)))
    return {}


def write(ctx) -> dict:
    """``bytes`` bytes to a file of the run's artifacts (one random MiB, repeated)."""
    path = Path(ctx.artifacts) / "handoff.bin"
    block, left = os.urandom(min(CHUNK, ctx.params["bytes"])), ctx.params["bytes"]
    with open(path, "wb") as out:
        while left > 0:
            left -= out.write(block[:left])
    return {"blob": str(path)}


def read(ctx, blob) -> dict:
    size = 0
    with open(blob, "rb") as data:
        while chunk := data.read(CHUNK):
            size += len(chunk)
    ctx.metric("bytes_read", float(size))
    return {}


def chain(n: int) -> Workload:
    steps = tuple(Step(f"t{i:03d}", f"{HERE}:light", needs=(f"t{i - 1:03d}",) if i else ()) for i in range(n))
    return _workload(f"chain-{n}", steps, {"tasks": n})


def fanout(width: int, cpu: bool = False) -> Workload:
    name = f"fanout-cpu-{width}" if cpu else f"fanout-{width}"
    steps = (Step("begin", f"{HERE}:begin"), Step("task", f"{HERE}:task", needs=("begin",), foreach="tasks"),
             Step("gather", f"{HERE}:gather", needs=("task",)))
    return _workload(name, steps, {"width": width}, busy=cpu)


def handoff(size: int, mode: str = "shared") -> Workload:
    steps = (Step("write", f"{HERE}:write"), Step("read", f"{HERE}:read", needs=("write",)))
    name = f"handoff-{size}" if mode == "shared" else f"handoff-{mode}-{size}"
    return _workload(name, steps, {"bytes": size}, handoff=mode)


def _workload(name: str, steps: tuple[Step, ...], params: dict, busy: bool = False,
              handoff: str = "shared") -> Workload:
    scales = {scale: {**params, **({"busy_s": BUSY_S[scale]} if busy else {})} for scale in SCALES}
    return Workload(name=name, ref=f"{HERE}:{name.replace('-', '_')}", steps=steps, scales=scales,
                    marker="scaling", builtin=True, handoff=handoff)


def workload(name: str) -> Workload:
    """The scaling workload of this name (``chain-16``, ``fanout-cpu-4``, ``handoff-1048576``,
    ``handoff-native-1048576``)."""
    found = NAME.match(name)
    if not found or int(found[2]) < 1:
        raise WorkloadError(f"{name!r} is not a scaling workload: chain-N, fanout-W, fanout-cpu-W or handoff-BYTES, "
                            "each size at least 1")
    family, size = found[1], int(found[2])
    if family == "chain":
        return chain(size)
    if family.startswith("handoff"):
        return handoff(size, "native" if family == "handoff-native" else "shared")
    return fanout(size, cpu=family == "fanout-cpu")


def __getattr__(attr: str) -> Workload:
    try:
        return workload(attr.replace("_", "-"))
    except WorkloadError:
        raise AttributeError(f"module {__name__!r} has no attribute {attr!r}") from None
