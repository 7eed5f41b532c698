"""The saved runs a session or ``compare`` gates against, and the baseline of
each benchmark in them: its ``history`` latest saved runs that are alike."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pytest_mlpbench.gates.identity import differences, identity, mlpbench_info, passed_rounds
from pytest_mlpbench.gates.storage import Entry, SavedRun, Store, resolve

LIKE = "same workload, scale, parameters and machine"


@dataclass
class Baseline:
    rounds: list[dict] = field(default_factory=list)
    runs: list[SavedRun] = field(default_factory=list)
    unlike: list[str] = field(default_factory=list)  # "LABEL differs in ..." of each unlike run met, newest first


class History:
    """The saved runs a session or ``compare`` gates against."""

    def __init__(self, runs: list[SavedRun], where: Path | str, history: int, unlike: bool = False,
                 hint: str = "--mlpbench-compare-unlike=yes"):
        self.runs = runs  # oldest first, ending at the chosen baseline
        self.where = where
        self.history = history
        self.unlike = unlike  # pool saved runs that differ from this one, saying how
        self.hint = hint  # the option that sets ``unlike``, for messages

    @classmethod
    def load(cls, source: Store | Path, ref: str | None = None, history: int = 1, unlike: bool = False) -> "History":
        """The runs up to ``ref`` (default: the latest) in ``source``: a storage's runs of one
        machine, or the machine's directory in a file storage."""
        store = source if isinstance(source, Store) else Store.directory_of(source)
        entries = store.entries()
        path = Path(ref).expanduser() if ref else None
        if path and path.is_file() and path.resolve() not in [e.key.resolve() for e in entries
                                                              if isinstance(e.key, Path)]:
            entries = [Entry.file(path)]  # a run saved elsewhere: it alone is the baseline
        end = resolve(entries, ref) + 1 if ref is not None else len(entries)
        return cls([store.read(e) for e in entries[:end]], store.where, history, unlike)

    def baseline(self, fullname: str, like: dict) -> Baseline:
        """Per-round values of a benchmark pooled over its ``history`` latest saved runs
        whose :func:`identity` is ``like``; the others are left out (or, with ``unlike``, pooled) and listed."""
        found = Baseline()
        for run in reversed(self.runs):
            info = mlpbench_info(run.benchmarks.get(fullname))
            if info is None:
                continue
            differ = differences(identity(info, run.machine_info), like)
            if differ:
                found.unlike.append(f"{run.label} differs in {', '.join(differ)}")
                if not self.unlike:
                    continue
            found.rounds = passed_rounds(info) + found.rounds
            found.runs.append(run)
            if len(found.runs) == self.history:
                break
        return found

    def remark(self, found: Baseline) -> str:
        """What a verdict says about its baseline's choice; empty when every saved run was alike."""
        if not found.unlike:
            return ""
        more = len(found.unlike) - 1
        listed = found.unlike[0] + (f" (and {more} more unlike run{'s' if more > 1 else ''})" if more else "")
        if self.unlike:
            return f"compared anyway ({self.hint}): {'; '.join(found.unlike)}"
        if not found.runs:
            return f"new: no baseline with the {LIKE}: {listed}; {self.hint} compares anyway"
        return f"left out: {listed}"
