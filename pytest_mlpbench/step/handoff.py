"""How the files a step writes reach the steps that need them.

- ``shared``: every task of a run writes and reads one artifacts directory.
- ``native``: each task writes into an empty directory of its own, which the
  architecture hands to its framework's data layer (Metaflow artifacts, DVC
  outs, MLflow artifacts, KFP artifacts, Airflow object storage, SageMaker
  channels). A task that needs those files gets them back from the data layer
  into a directory the architecture names for that producing task.

Paths cross between tasks as ``mlpbench-artifact:KEY/REL``: a task's output
path under its own directory becomes that token, with KEY naming the task
(:func:`task_key`), and a token in a task's inputs becomes a path under the
directory carried for KEY again. A token whose files were not carried is an
error, never a silent read of another task's directory.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

TYPE_CHECKING = False
if TYPE_CHECKING:  # importing typing costs every task's process 3 ms
    from typing import Any

MODES = ("shared", "native")
TOKEN = "mlpbench-artifact:"


class HandoffError(Exception):
    """A task was given a path whose files its architecture did not carry to it."""


def task_key(step: str, index: int | None) -> str:
    return step if index is None else f"{step}.{index}"


def portable(value: Any, own: str | os.PathLike, key: str) -> Any:
    """``value`` with each path under ``own`` (the task's directory) as a token."""
    root = os.path.abspath(own)

    def convert(text: str) -> str:
        path = os.path.abspath(text) if os.path.isabs(text) else None
        if path == root or (path and path.startswith(root + os.sep)):
            rel = os.path.relpath(path, root)
            return f"{TOKEN}{key}" + ("" if rel == "." else f"/{Path(rel).as_posix()}")
        return text

    return _map_strings(value, convert)


def keys(value: Any) -> set[str]:
    """The producing tasks whose files the tokens in ``value`` name."""
    found: set[str] = set()

    def collect(text: str) -> str:
        if text.startswith(TOKEN):
            found.add(text[len(TOKEN):].split("/", 1)[0])
        return text

    _map_strings(value, collect)
    return found


def localize(value: Any, carried: Mapping[str, str | os.PathLike]) -> Any:
    """``value`` with each token as a path under the directory carried for its task."""

    def convert(text: str) -> str:
        if not text.startswith(TOKEN):
            return text
        key, _, rel = text[len(TOKEN):].partition("/")
        if key not in carried:
            raise HandoffError(f"input {text!r}: the files of task {key!r} were not carried to this task "
                               f"(carried: {sorted(carried) or 'none'})")
        return str(Path(carried[key]) / rel) if rel else str(carried[key])

    return _map_strings(value, convert)


def _map_strings(value: Any, fn) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value
