"""The runs pytest-benchmark saved, listed and read through its own storage
API (``pytest_benchmark.utils.load_storage``, the storages' ``query`` and
``load``), as ``pytest-benchmark compare`` and ``--benchmark-compare`` do:
file storage (``NNNN_*.json`` files in a directory per machine) or any other
it supports (elasticsearch). No pytest import."""
from __future__ import annotations

import argparse
import glob
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from pytest_mlpbench.gates.spec import GateError

_RUN_FILE = re.compile(r"^(\d{4})_.*\.json$")
_CREDENTIALS = re.compile(r"(\w+://)[^@/,\s]+@")


@dataclass
class SavedRun:
    path: Path | str  # its file; in a storage without files, the storage's key of the run
    number: int
    benchmarks: dict[str, dict] = field(default_factory=dict)  # fullname -> saved benchmark
    machine_info: dict | None = None
    saved_at: str | None = None  # pytest-benchmark's ``datetime`` of the run (ISO 8601), where it recorded one

    @property
    def label(self) -> str:
        return self.path.stem if isinstance(self.path, Path) else self.path


@dataclass(frozen=True)
class Entry:
    """A saved run as the storage lists it, before it is read."""

    key: Path | str  # a file of file storage; the storage's key of the run otherwise
    number: int  # NNNN of the file; in a storage without files, its place in the listing, oldest first

    @classmethod
    def file(cls, path: Path) -> "Entry":
        number = _RUN_FILE.match(path.name)
        return cls(path, int(number.group(1)) if number else 0)

    @property
    def label(self) -> str:
        return self.key.stem if isinstance(self.key, Path) else self.key

    @property
    def name(self) -> str:
        return self.key.name if isinstance(self.key, Path) else self.key


def resolve(entries: list[Entry], ref: str) -> int:
    """Index in ``entries`` of the run ``ref`` names: a number, a save name, a file stem or a path."""
    path = Path(ref).expanduser()
    if path.is_file():
        matches = [i for i, e in enumerate(entries) if isinstance(e.key, Path) and e.key.resolve() == path.resolve()]
    elif ref.isdigit():
        matches = [i for i, e in enumerate(entries) if e.number == int(ref)]
    else:
        matches = [i for i, e in enumerate(entries)
                   if ref in (e.label, e.label.partition("_")[2]) or e.label.startswith(ref) or e.name == ref]
    if not matches:
        known = ", ".join(e.label for e in entries[-5:]) or "none"
        raise GateError(f"run {ref!r} matches no saved run (latest: {known})")
    return matches[-1]


def saved_run(key: Path | str, number: int, data) -> SavedRun:
    """A run from its saved JSON; anything else is an error naming it."""
    benches = data.get("benchmarks") if isinstance(data, dict) else None
    if not isinstance(benches, list) or not all(isinstance(b, dict) and "fullname" in b for b in benches):
        raise GateError(
            f"{key}: not a pytest-benchmark result file (expected an object with a 'benchmarks' list); "
            "delete or move it out of the benchmark storage"
        )
    machine, saved_at = data.get("machine_info"), data.get("datetime")
    return SavedRun(key, number, {b["fullname"]: b for b in benches}, machine if isinstance(machine, dict) else None,
                    saved_at if isinstance(saved_at, str) else None)


def load_run(path: Path) -> SavedRun:
    """One saved file read directly: the reason where pytest-benchmark's loader skips a file."""
    try:
        data = json.loads(path.read_text(encoding="utf8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise GateError(f"{path}: not readable as JSON ({exc}); delete or move it out of the benchmark storage")
    return saved_run(path, Entry.file(path).number, data)


class _Quiet:
    """Logger of the storages opened here: where pytest-benchmark would warn of a file it
    skips, :meth:`Store.read` says why as an error (or reads it, see there)."""

    def warning(self, *args, **kwargs) -> None:
        pass

    info = debug = error = warning


def masked(text: str) -> str:
    """A storage URI or host list without the credentials in it."""
    return _CREDENTIALS.sub(r"\1***:***@", text)


class Store:
    """The saved runs of one machine in a pytest-benchmark storage."""

    def __init__(self, storage, machine: str, directory: Path | None = None):
        self.storage = storage  # pytest-benchmark's storage object; None: a file storage directory that does not exist
        self.machine = machine
        self.directory = directory  # the machine directory of file storage; None for other storages
        self._loaded: dict[str, dict] = {}  # key -> saved run, of storages whose listing loads them

    @classmethod
    def directory_of(cls, directory: Path) -> "Store":
        """File storage, from one machine's directory in it (``STORAGE/MACHINE_ID``)."""
        from pytest_benchmark.utils import load_storage

        directory = Path(directory)
        if not directory.parent.is_dir():  # pytest-benchmark would create it: reading leaves no trace
            return cls(None, directory.name, directory)
        storage = load_storage(f"file://{directory.parent}", logger=_Quiet(), default_machine_id=directory.name,
                               netrc="")
        return cls(storage, directory.name, storage.path / directory.name)

    @classmethod
    def of(cls, storage, machine: str) -> "Store":
        """A storage pytest-benchmark opened (a session's), for the runs of ``machine``."""
        from pytest_benchmark.storage.file import FileStorage

        if isinstance(storage, FileStorage):  # reopened with a logger of ours, see _Quiet
            return cls.directory_of(storage.path / machine)
        return cls(storage, machine)

    @classmethod
    def open(cls, uri: str, machine: str, netrc: str = "") -> "Store":
        """A ``--benchmark-storage`` value: a path, ``file://PATH`` or ``elasticsearch+http[s]://...``."""
        from pytest_benchmark.utils import load_storage

        if "://" not in uri or uri.startswith("file://"):
            return cls.directory_of(Path(uri.removeprefix("file://")).expanduser().resolve() / machine)
        try:
            storage = load_storage(uri, logger=_Quiet(), default_machine_id=machine, netrc=netrc)
        except (ImportError, argparse.ArgumentTypeError) as exc:
            raise GateError(f"storage {masked(uri)!r}: {exc}") from None
        except Exception as exc:  # the client's own errors: connection refused, authentication, ...
            raise GateError(f"storage {masked(uri)!r} cannot be reached: {type(exc).__name__}: {exc}") from None
        return cls(storage, machine)

    @property
    def where(self) -> Path | str:
        if self.directory is not None:
            return self.directory
        return f"{masked(str(self.storage))} (machine {self.machine})"

    def nothing_saved(self) -> str:
        if self.directory is None:
            return f"no saved runs in {self.where}"
        root = self.directory.parent
        machines = ", ".join(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else "none"
        return f"no saved runs in {self.directory} (machine directories in {root}: {machines or 'none'})"

    def entries(self) -> list[Entry]:
        """The machine's saved runs, oldest first."""
        if self.directory is None:
            return self._load_all()
        if self.storage is None:
            return []
        try:
            found = self.storage.query(f"{glob.escape(self.machine)}/[0-9][0-9][0-9][0-9]_")
        except ValueError as exc:
            raise GateError(f"machine {self.machine!r}: {exc}") from None
        # query also lists numbered files at the top of the storage; only the machine's directory counts
        return [Entry.file(p) for p in found if p.parent == self.directory and _RUN_FILE.match(p.name)]

    def read(self, entry: Entry) -> SavedRun:
        if not isinstance(entry.key, Path):
            return saved_run(entry.key, entry.number, self._loaded[entry.key])
        storage = self.storage if self.directory is not None and self.storage is not None else None
        if storage is None:  # a file outside any storage this store has open
            from pytest_benchmark.storage.file import FileStorage

            storage = FileStorage(entry.key.parent, _Quiet())
        try:
            loaded = [data for _, data in storage.load(str(entry.key))]
        except ValueError:  # not a file after all
            loaded = []
        if not loaded:  # skipped: say why; or take it, as before, where only pytest-benchmark's stats are missing
            return load_run(entry.key)
        return saved_run(entry.key, entry.number, loaded[0])

    def _load_all(self) -> list[Entry]:
        """Storages without files (elasticsearch): their ``load`` lists and reads the runs in one query,
        by the prefix pytest-benchmark gives the runs a machine saved, oldest first."""
        try:
            loaded = list(self.storage.load(f"{self.machine}_"))
        except Exception as exc:  # the client's own errors: connection refused, authentication, ...
            raise GateError(f"cannot read the saved runs from {self.where}: {type(exc).__name__}: {exc}") from None
        benches = [b for _, data in loaded for b in (data.get("benchmarks") or []) if isinstance(b, dict)]
        if benches and not any("extra_info" in b for b in benches):
            raise GateError(
                f"{self.where}: pytest-benchmark's {type(self.storage).__name__} returns the saved benchmarks "
                "without their extra_info, where mlpbench records the rounds the gates compare; keep the gated "
                "history in file storage (--benchmark-storage=file://DIR)")
        self._loaded = {str(key): data for key, data in loaded}
        return [Entry(str(key), number) for number, (key, _) in enumerate(loaded, 1)]
