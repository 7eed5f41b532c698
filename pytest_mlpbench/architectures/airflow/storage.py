"""Native hand-off for ``airflow-local``: files travel through Airflow's Object
Storage (``airflow.sdk.ObjectStoragePath``), as in Airflow's object-storage
tutorial, where one task writes under a base path and the next reads from it.

Each task runs in its own empty directory (``<run artifacts>/<KEY>``, KEY =
``step`` or ``step.index``). After the step, the task copies that directory to
``<base>/<run_id>/<KEY>/``; before the step, it copies each KEY that its
upstream outputs name (``mlpbench-artifact:KEY/...``) from there into a fresh
directory of its own, ``<run dir>/carried/<its KEY>/<KEY>``, and runs the step
with those directories as ``carried``. The base is
``--mlpbench-airflow-object-storage`` (default: a ``file://`` directory in the
session's scratch space); any URI Airflow's Object Storage takes works, with a
connection id as its user part (``s3://aws_default@bucket/prefix``). The copies
happen in the task process outside the step's own span, so they count as
Airflow's overhead. Imports Airflow only inside the task process.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Mapping

from pytest_mlpbench.model.workload import RunSpec, Workload, WorkloadError
from pytest_mlpbench.step import handoff, run_step, task_spec

#: Keys of the DAG run conf (under ``mlpbench``) that a native run adds.
STORE_KEY = "object_storage"
CARRIED_KEY = "carried"


def parse_uri(text: str) -> str:
    """``--mlpbench-airflow-object-storage``: a URI (``file:///PATH``, ``s3://CONN@BUCKET/PREFIX``...)
    or a local directory, which becomes a ``file://`` URI."""
    text = text.strip()
    if "://" not in text:
        if not text:
            raise ValueError("expected a URI such as file:///PATH or s3://CONN_ID@BUCKET/PREFIX, or a directory")
        return "file://" + os.path.abspath(os.path.expanduser(text))
    scheme, _, rest = text.partition("://")
    if not scheme.isidentifier() or not rest.strip("/"):
        raise ValueError("expected a URI such as file:///PATH or s3://CONN_ID@BUCKET/PREFIX, or a directory")
    return text.rstrip("/")


def local_dir(uri: str) -> Path | None:
    """The directory of a ``file://`` URI, or None for other stores."""
    scheme, _, rest = uri.partition("://")
    return Path("/" + rest.lstrip("/")) if scheme in ("file", "local") else None


def run_native(spec: RunSpec, step_name: str, upstream: Mapping[str, Any], index: int | None,
               workload: Workload, payload: Mapping) -> dict:
    """Fetch what the task needs, run the step in its own directory, publish that directory."""
    try:
        uri, carried_root = payload[STORE_KEY], payload[CARRIED_KEY]
    except KeyError:
        raise WorkloadError("the DAG run conf names no object storage for native hand-off: "
                            "trigger it through pytest-mlpbench") from None
    from airflow.sdk import ObjectStoragePath

    base = ObjectStoragePath(uri) / spec.run_id
    key = handoff.task_key(step_name, index)
    carried = {need: fetch(base / need, Path(carried_root) / key / need) for need in sorted(handoff.keys(upstream))}
    own = task_spec(spec, step_name, index)
    outputs = run_step(own, step_name, upstream, index, workload, carried)
    publish(Path(own.artifacts), base / key)
    return outputs


def publish(directory: Path, target) -> None:
    """Copy every file under ``directory`` to the object storage path ``target``."""
    from airflow.sdk import ObjectStoragePath

    for root, _dirs, files in os.walk(directory):
        for name in files:
            path = Path(root) / name
            dst = target / path.relative_to(directory).as_posix()
            dst.parent.mkdir(parents=True, exist_ok=True)  # a no-op on object stores
            ObjectStoragePath(f"file://{path}").copy(dst)


def fetch(source, directory: Path) -> Path:
    """Copy every object under ``source`` into ``directory`` (made fresh) and return it."""
    from airflow.sdk import ObjectStoragePath

    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    prefix = source.path.rstrip("/") + "/"
    for found in source.fs.find(source.path):  # one listing, also on object stores
        rel = found[len(prefix):] if found.startswith(prefix) else os.path.basename(found)
        dst = directory / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        (source / rel).copy(ObjectStoragePath(f"file://{dst}"))
    return directory
