"""The steps' image, built locally with no registry and cached by content hash.

Layers, each named by a hash of what goes into it; nothing is taken from a
source checkout, so a pip-installed pytest-mlpbench builds the same image:

1. ``rootfs-<hash>.tar``: a minimal Debian (``debootstrap --variant=minbase``)
   with python3 and pip, imported as an image (slow: minutes; cached as a tar).
2. ``localhost/mlpbench-base:<hash>``: that plus kfp (the KFP executor runs in the task
   container) from the package index, at the versions installed here: kfp and
   everything it requires, pinned as this environment has them (:func:`pins`).
   Cached as a ``docker save`` tar, loaded into a fresh Podman store. The
   ``localhost/`` names keep Podman from looking them up on docker.io.
3. Optionally ``localhost/mlpbench-torch:<hash>`` on top: torch from the host's
   wheel (/opt/wheels or $MLPBENCH_WHEELS) and numpy, pinned the same way, for the
   real workloads (cached like layer 2).
4. ``localhost/mlpbench-steps:<hash>``: that plus the installed ``pytest_mlpbench``
   package (its files, wherever this interpreter imports it from: site-packages
   or an editable checkout) under /opt/mlpbench (seconds; rebuilt on any change).
5. ``localhost/mlpbench-workloads:<hash>``: that plus the code of the workloads a
   benchmark runs (:func:`workload_sources`): the top-level package or module of
   each workload's ``ref`` and of each step's function, from wherever they are
   imported here, also under /opt/mlpbench (seconds, on the session's engine,
   before the benchmark; see :func:`ensure_workload_image`).
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

from pytest_mlpbench.architectures.base import RunFailed, tail
from pytest_mlpbench.architectures.containers.engine import Engine, unmount_under
from pytest_mlpbench.model.workload import Workload

SUITE = "bookworm"
MIRROR = os.environ.get("MLPBENCH_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = ("python3", "python3-pip", "ca-certificates")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
PACKAGE = "pytest_mlpbench"
BUILD_TIMEOUT_S = 1200
APP_DIR = "/opt/mlpbench"

BASE_FILE = f"""\
FROM {{rootfs}}
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY constraints.txt /tmp/constraints.txt
RUN PIP_CERT=/etc/ssl/certs/ca-certificates.crt python3 -m pip install --no-cache-dir --break-system-packages \\
    -c /tmp/constraints.txt kfp=={{kfp}} && rm /tmp/constraints.txt
"""
TORCH_FILE = """\
FROM {base}
COPY constraints.txt /tmp/constraints.txt
COPY {wheel} /tmp/{wheel}
RUN PIP_CERT=/etc/ssl/certs/ca-certificates.crt python3 -m pip install --no-cache-dir --break-system-packages \\
    -c /tmp/constraints.txt /tmp/{wheel} numpy && rm /tmp/constraints.txt /tmp/{wheel}
"""
WHEELS = Path(os.environ.get("MLPBENCH_WHEELS", "/opt/wheels"))
#: Layers 4 and 5: files under ``src/`` in the build context land in APP_DIR.
CODE_FILE = f"""\
FROM {{base}}
COPY src {APP_DIR}
RUN python3 -m compileall -q {APP_DIR}
ENV PYTHONPATH={APP_DIR} PYTHONDONTWRITEBYTECODE=1
WORKDIR /tmp
"""


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mlpbench"


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\0")
    return h.hexdigest()[:16]


def tree_files(path: Path, under: str) -> dict[str, Path]:
    """The files of a package directory (or one module file), by their path in the image."""
    if path.is_file():
        return {under: path}
    return {f"{under}/{f.relative_to(path)}": f for f in sorted(path.rglob("*"))
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo")}


def package_files() -> dict[str, Path]:
    """pytest-mlpbench's own files, from the package this interpreter imports."""
    return tree_files(Path(importlib.import_module(PACKAGE).__file__).resolve().parent, PACKAGE)


def workload_modules(workloads: Iterable[Workload]) -> list[str]:
    """The modules the workloads' code lives in: each ``ref``'s and each step function's."""
    names = set()
    for workload in workloads:
        names.add(workload.ref.partition(":")[0])
        for step in workload.steps:
            module = step.fn.partition(":")[0] if isinstance(step.fn, str) else getattr(step.fn, "__module__", None)
            if module:
                names.add(module)
    return sorted(names)


def module_source(name: str) -> tuple[str, Path] | None:
    """Where the code of module ``name`` comes from, as (its path in the image, its path
    here): its top-level package, or module file; below a namespace package, the first
    regular package (or module) on the way down. None for the standard library and for
    pytest-mlpbench itself (layer 4 has it)."""
    parts = name.split(".")
    if parts[0] in sys.stdlib_module_names or parts[0] in sys.builtin_module_names or parts[0] == PACKAGE:
        return None
    for depth in range(1, len(parts) + 1):
        dotted = ".".join(parts[:depth])
        try:
            spec = importlib.util.find_spec(dotted)
        except (ImportError, ValueError) as exc:
            raise RunFailed(f"cannot find module {dotted!r} of the workload's code: {exc}") from exc
        if spec is None:
            raise RunFailed(f"cannot find module {dotted!r} of the workload's code on sys.path")
        if spec.origin in (None, "namespace") and spec.submodule_search_locations is not None:
            continue  # a namespace package: take only the part below it that holds the module
        if not spec.has_location:
            return None  # built in or frozen
        origin = Path(spec.origin).resolve()
        if spec.submodule_search_locations is not None:  # a regular package: its whole directory
            return "/".join(parts[:depth]), origin.parent
        return "/".join(parts[:depth - 1] + [origin.name]), origin
    raise RunFailed(f"module {name!r} of the workload's code is a namespace package with no files")


def workload_sources(workloads: Iterable[Workload]) -> dict[str, Path]:
    """The files layer 5 adds for ``workloads``, by their path under /opt/mlpbench."""
    files: dict[str, Path] = {}
    for name in workload_modules(workloads):
        found = module_source(name)
        if found is not None:
            files.update(tree_files(found[1], found[0]))
    return files


def kfp_version() -> str:
    from importlib.metadata import version

    return version("kfp")


def pins(*roots: str, leave_out: tuple[str, ...] = ()) -> str:
    """pip constraints: ``name==version`` of ``roots`` and of everything they require,
    transitively (markers and extras as pip would evaluate them here), as installed in
    this environment; what is not installed here is not pinned."""
    from importlib.metadata import PackageNotFoundError, distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: dict[str, str | None] = {}
    extras: dict[str, set[str]] = {}
    todo = [(canonicalize_name(r), frozenset()) for r in roots]
    while todo:
        name, wanted = todo.pop()
        if name in found and wanted <= extras[name]:
            continue
        extras.setdefault(name, set()).update(wanted)
        try:
            dist = distribution(name)
        except PackageNotFoundError:
            found[name] = None
            continue
        found[name] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in {"", *extras[name]}):
                todo.append((canonicalize_name(req.name), frozenset(req.extras)))
    skip = {canonicalize_name(n) for n in leave_out}
    return "".join(f"{name}=={version}\n" for name, version in sorted(found.items()) if version and name not in skip)


def ensure_image(engine: Engine, cache: Path | None = None, log: Path | None = None, torch: bool = False) -> str:
    """The tag of the steps' image on ``engine`` (layers 1-4: no workload code yet),
    built or loaded as needed; with ``torch``, on a layer with torch and numpy (for
    the real workloads)."""
    cache = Path(cache or default_cache())
    cache.mkdir(parents=True, exist_ok=True)
    with locked(cache / "build.lock"), engine.client(timeout=BUILD_TIMEOUT_S) as client:
        base = first = ensure_base(client, cache, log)
        if torch:
            base = ensure_torch(client, base, cache, log)
        if engine.kind == "podman":
            publish(engine, cache, [first, base] if torch else [base], log)
        return ensure_code(client, "localhost/mlpbench-steps", base, package_files(), log)


def ensure_workload_image(engine: Engine, steps_image: str, workloads: Iterable[Workload],
                          log: Path | None = None) -> str:
    """The tag of ``steps_image`` plus the code of ``workloads`` (layer 5), built on
    ``engine`` where it has no image of that content yet; ``steps_image`` itself
    where the workloads' code is all in the standard library or pytest-mlpbench."""
    files = workload_sources(workloads)
    if not files:  # all of it in the standard library or in pytest-mlpbench
        return steps_image
    with engine.client(timeout=BUILD_TIMEOUT_S) as client:
        return ensure_code(client, "localhost/mlpbench-workloads", steps_image, files, log)


def code_tag(name: str, base: str, files: dict[str, Path]) -> str:
    """``name`` tagged by a hash of everything the layer is made of: its parent, its
    Dockerfile, and each file's path in the image and contents."""
    return f"{name}:" + digest(base, CODE_FILE.format(base=base), *files, *(f.read_bytes() for f in files.values()))


def ensure_code(client, name: str, base: str, files: dict[str, Path], log: Path | None) -> str:
    """A layer on ``base`` that copies ``files`` (by their path under APP_DIR) into the image."""
    tag = code_tag(name, base, files)
    if not has_image(client, tag):
        context = {"Dockerfile": CODE_FILE.format(base=base).encode()}
        context.update({f"src/{dest}": path.read_bytes() for dest, path in files.items()})
        build(client, context, tag, log)
    return tag


def torch_wheel() -> Path:
    from importlib.metadata import version

    wanted = version("torch").split("+")[0]
    found = sorted(WHEELS.glob(f"torch-{wanted}*-cp311-*.whl"))
    if not found:
        raise RunFailed(f"no torch {wanted} wheel for Python 3.11 under {WHEELS} (set MLPBENCH_WHEELS), "
                        "or run with --mlpbench-container-torch=no")
    return found[0]


def ensure_torch(client, base: str, cache: Path, log: Path | None) -> str:
    wheel = torch_wheel()
    constraints = pins("torch", "numpy", leave_out=("torch",))  # the wheel is the torch
    dockerfile = TORCH_FILE.format(base=base, wheel=wheel.name)
    tag = "localhost/mlpbench-torch:" + digest(base, dockerfile, wheel.name, str(wheel.stat().st_size), constraints)
    return cached_build(client, lambda: {"Dockerfile": dockerfile.encode(), "constraints.txt": constraints.encode(),
                                         wheel.name: wheel.read_bytes()},
                        tag, cache, log)


def cached_build(client, context, tag: str, cache: Path, log: Path | None) -> str:
    """``tag`` from the engine, else from its saved tar in the cache, else built and saved."""
    saved = saved_tar(cache, tag)
    if has_image(client, tag):
        return tag
    if saved.exists():
        with open(saved, "rb") as archive:
            client.images.load(archive)
        if has_image(client, tag):
            return tag
    build(client, context(), tag, log)
    partial = saved.with_suffix(".part")
    with open(partial, "wb") as out:
        for chunk in client.images.get(tag).save(named=True):
            out.write(chunk)
    partial.rename(saved)
    return tag


def saved_tar(cache: Path, tag: str) -> Path:
    return cache / f"{tag.split('/')[-1].replace(':', '-')}.tar"


def publish(engine: Engine, cache: Path, tags: list[str], log: Path | None) -> None:
    """Load the saved layers into the cache's Podman image store, which later
    sessions' services read as an additional store: no load per session."""
    # the store's libpod database pins its run root: the same for every session
    # (and Podman wants it under 50 characters)
    store, runroot = image_store(cache), Path(f"/tmp/mlpbench-store-{digest(str(Path(cache).resolve()))[:8]}")
    (Path(cache) / "store.conf").write_text(
        f'[storage]\ndriver = "overlay"\ngraphroot = "{store}"\nrunroot = "{runroot}"\n')
    (Path(cache) / "store-containers.conf").write_text(
        f'[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
        f'events_logfile_path = "{cache}/store-events.log"\n')
    env = {**os.environ, "CONTAINERS_STORAGE_CONF": str(Path(cache) / "store.conf"),
           "CONTAINERS_CONF": str(Path(cache) / "store-containers.conf")}
    cli = ["podman", "--root", str(store), "--runroot", str(runroot)]
    try:
        for tag in tags:
            exists = subprocess.run(cli + ["image", "exists", tag], env=env, capture_output=True,
                                    timeout=BUILD_TIMEOUT_S)
            if exists.returncode != 0 and saved_tar(cache, tag).exists():
                run_logged(cli + ["load", "-q", "-i", str(saved_tar(cache, tag))], log, env=env)
    finally:
        unmount_under(store)
        unmount_under(runroot)


def image_store(cache: Path) -> Path:
    return Path(cache) / "store"


def ensure_base(client, cache: Path, log: Path | None) -> str:
    constraints = pins("kfp")
    rootfs = ensure_rootfs(cache, log)
    rootfs_tag = "localhost/mlpbench-rootfs:" + rootfs.stem.split("-", 1)[1]
    dockerfile = BASE_FILE.format(rootfs=rootfs_tag, kfp=kfp_version())
    tag = "localhost/mlpbench-base:" + digest(rootfs.name, dockerfile, constraints)

    def context():
        import_rootfs(client, rootfs, rootfs_tag)
        return {"Dockerfile": dockerfile.encode(), "ca-certificates.crt": Path(CA_BUNDLE).read_bytes(),
                "constraints.txt": constraints.encode()}

    return cached_build(client, context, tag, cache, log)


def import_rootfs(client, rootfs: Path, tag: str) -> None:
    if has_image(client, tag):
        return
    with open(rootfs, "rb") as archive:
        answer = client.api.import_image_from_data(archive, repository=tag.rpartition(":")[0])
    # Podman's Docker API ignores the import's tag (it tags "latest"): tag the id ourselves
    image_id = json.loads(answer.strip().splitlines()[-1])["id"] if isinstance(answer, str) else answer["id"]
    client.images.get(image_id).tag(*tag.rsplit(":", 1))


def ensure_rootfs(cache: Path, log: Path | None) -> Path:
    """A tar of a minimal Debian root filesystem, made by debootstrap once."""
    target = cache / f"rootfs-{digest(SUITE, MIRROR, *PACKAGES)}.tar"
    if target.exists():
        return target
    if shutil.which("debootstrap") is None:
        raise RunFailed("building the steps' image needs debootstrap (apt-get install debootstrap), "
                        "or name an image with --mlpbench-container-image")
    work = cache / f"{target.stem}.tmp"
    shutil.rmtree(work, ignore_errors=True)
    try:
        run_logged(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(work),
                    MIRROR], log)
        for cached in (work / "var/cache/apt/archives").glob("*.deb"):
            cached.unlink()
        run_logged(["tar", "-C", str(work), "--one-file-system", "--exclude=./proc/*", "--exclude=./sys/*",
                    "--exclude=./dev/*", "-cf", str(target.with_suffix(".part")), "."], log)
        target.with_suffix(".part").rename(target)
    finally:
        unmount_under(work)  # debootstrap mounts /proc and /sys inside while it runs
        shutil.rmtree(work, ignore_errors=True)
    return target


def build(client, files: dict[str, bytes], tag: str, log: Path | None) -> None:
    """Build ``tag`` from an in-memory context; host networking, so pip reaches the index
    without a bridge network (no NAT rules, no IP forwarding)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as context:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            context.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    started = time.monotonic()
    lines = []
    try:
        for chunk in client.api.build(fileobj=buffer, custom_context=True, tag=tag, network_mode="host",
                                      rm=True, forcerm=True, decode=True, timeout=BUILD_TIMEOUT_S):
            lines.append(chunk.get("stream") or chunk.get("error") or "")
            if "error" in chunk:
                raise RunFailed(f"building image {tag} failed: {chunk['error']}")
    finally:
        if log:
            with open(log, "a") as out:
                out.write("".join(lines) + f"\n[{tag}: {time.monotonic() - started:.1f}s]\n")
    if not has_image(client, tag):
        raise RunFailed(f"building image {tag} produced no image:\n{''.join(lines[-20:])}")


def has_image(client, tag: str) -> bool:
    import docker

    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    return True


def run_logged(cmd: list[str], log: Path | None, env: dict | None = None) -> None:
    with open(log or os.devnull, "ab") as out:
        done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=BUILD_TIMEOUT_S, env=env)
    if done.returncode:
        raise RunFailed(f"{' '.join(cmd[:1] + cmd[-3:])} exited {done.returncode}: {tail(log, 3) if log else ''}")


@contextmanager
def locked(path: Path):
    """One build at a time per cache directory, across sessions."""
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
