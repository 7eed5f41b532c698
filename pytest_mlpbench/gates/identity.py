"""What a saved benchmark records for the gates (mlpbench's per-round values
in its ``extra_info``), and what it must share with this run to be a baseline:
workload, scale, parameters and kind of machine."""
from __future__ import annotations

import json


def mlpbench_info(bench: dict | None) -> dict | None:
    info = ((bench or {}).get("extra_info") or {}).get("mlpbench")
    return info if isinstance(info, dict) else None


def passed_rounds(info: dict) -> list[dict]:
    return [r for r in info.get("rounds") or [] if isinstance(r, dict) and r.get("outcome", "passed") == "passed"]


def values(rounds: list[dict], metric: str) -> list[float]:
    return [float(r[metric]) for r in rounds if isinstance(r.get(metric), (int, float))]


def fingerprint(machine_info: dict | None) -> dict | None:
    """The fields of pytest-benchmark's ``machine_info`` that make two machines the same for
    benchmarking (docs/gates.md says why these): not the host name, kernel release or Python patch level."""
    if not isinstance(machine_info, dict):
        return None
    cpu = machine_info.get("cpu") if isinstance(machine_info.get("cpu"), dict) else {}
    ours = machine_info.get("mlpbench") if isinstance(machine_info.get("mlpbench"), dict) else {}
    version = str(machine_info.get("python_version") or "")
    return {
        "system": machine_info.get("system"),
        "arch": machine_info.get("machine"),
        "cpu": cpu.get("brand_raw"),
        "cpus": cpu.get("count") or ours.get("cpu_count"),
        "python": f"{machine_info.get('python_implementation')} {'.'.join(version.split('.')[:2])}",
    }


def identity(info: dict, machine_info: dict | None) -> dict:
    """What a saved benchmark must share with this run to be its baseline. ``params`` and
    ``machine`` are None where the file does not record them (runs saved before mlpbench did)."""
    params = info.get("params")
    return {"workload": info.get("workload"), "scale": info.get("scale"),
            "params": params if isinstance(params, dict) else None, "machine": fingerprint(machine_info)}


_MISSING = object()
_UNKNOWN = {"params": ("workload parameters", "predates their recording"),
            "machine": ("machine", "has no machine_info")}


def differences(saved: dict, now: dict) -> list[str]:
    """``FIELD (saved X, now Y)`` for every field of two :func:`identity` values that differs."""
    found = [_differs(key, saved[key], now[key]) for key in ("workload", "scale") if saved[key] != now[key]]
    for section, prefix in (("params", ""), ("machine", "machine.")):
        old, new = saved[section], now[section]
        if old is None or new is None:
            what, why = _UNKNOWN[section]
            side = "neither run records them" if old is None and new is None else (
                f"the saved run {why}" if old is None else "this run does not record them")
            found.append(f"{what} (unknown: {side})")
            continue
        found += [_differs(prefix + key, old.get(key, _MISSING), new.get(key, _MISSING))
                  for key in {**old, **new} if old.get(key, _MISSING) != new.get(key, _MISSING)]
    return found


def _differs(name: str, saved, now) -> str:
    return f"{name} (saved {_show(name, saved)}, now {_show(name, now)})"


def _show(name: str, value) -> str:
    if value is _MISSING:
        return "not set"
    if name == "data_dir" and value is None:
        return "generated data"
    return json.dumps(value, default=str)
