"""Results on disk (``results/``) and the terminal table.

``runs.jsonl`` gains one line per run as soon as the run ends, whatever its
outcome, so an interrupted session keeps what it measured; the CSV files and
``summary.md`` describe the current session and are replaced atomically.
"""
from __future__ import annotations

import csv
import errno
import io
import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

from pytest_mlpbench.measure.monitor import Sample
from pytest_mlpbench.measure.record import FIGURES, RunRecord
from pytest_mlpbench.results.atomic import ResultsError, write_atomic
from pytest_mlpbench.results.tables import summary_markdown



def append_line(path: Path, line: str) -> None:
    """Append one whole line, or nothing: a short write (a full disk) is cut
    off again, so the lines before it stay parseable."""
    data = (line + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None
    size = os.fstat(fd).st_size
    try:
        if os.write(fd, data) != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        os.fsync(fd)
    except OSError as exc:
        os.ftruncate(fd, size)
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)


def _mkdir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None


class ResultsWriter:
    def __init__(self, directory: Path):
        self.dir = directory

    def check(self) -> None:
        """Fail early, with the reason, when results cannot be written here."""
        probe = self.dir / f".probe.{os.getpid()}"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ResultsError(f"cannot write results to {self.dir}: {exc.strerror or exc}") from None

    def add(self, record: RunRecord, samples: Sequence[Sample]) -> None:
        """The run's line first, then its time series: a full disk loses the smaller part."""
        series = self.dir / "series" / f"{record.run_id}.csv"
        _mkdir(self.dir)
        append_line(self.dir / "runs.jsonl", json.dumps({**record.to_dict(), "series": str(series)}, sort_keys=True))
        _mkdir(series.parent)
        write_atomic(series, to_csv([asdict(s) for s in samples], ["t_s", "cpu_percent", "rss_bytes", "processes"]))

    def add_line(self, line: dict) -> None:
        """A run's line as another process wrote it (a worker's): its series stays where that process wrote it."""
        _mkdir(self.dir)
        append_line(self.dir / "runs.jsonl", json.dumps(line, sort_keys=True))

    def keep_artifacts(self, run_id: str, artifacts: str) -> None:
        shutil.copytree(artifacts, self.dir / "artifacts" / run_id, dirs_exist_ok=True)

    def write_summaries(self, records: Sequence[RunRecord]) -> None:
        if not records:
            return
        columns = ["run_id", "architecture", "workload", "scale", "round", "warmup", "outcome", *FIGURES, "memory_method"]
        rows = [{**{c: getattr(r, c) for c in columns}, **r.metrics} for r in records]
        metric_names = sorted({m for r in records for m in r.metrics})
        write_atomic(self.dir / "runs.csv", to_csv(rows, columns + metric_names))
        steps = [{"run_id": r.run_id, "architecture": r.architecture, **row} for r in records for row in r.steps]
        step_columns = list(dict.fromkeys(k for row in steps for k in row))
        write_atomic(self.dir / "steps.csv", to_csv(steps, step_columns))
        write_atomic(self.dir / "summary.md", summary_markdown(records))
        from pytest_mlpbench.results.report import write_session_report  # lazily: matplotlib only when there is something to plot

        write_session_report(records, self.dir)


def to_csv(rows: Iterable[dict], columns: Sequence[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
