"""Files replaced in one step: written beside their place, then renamed over it,
so a reader sees the old file or the new one, never half of one."""
from __future__ import annotations

import os
from pathlib import Path


class ResultsError(OSError):
    """Results could not be written; the message names the file and the reason."""


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ResultsError(f"cannot write {path}: {exc.strerror or exc}") from None
