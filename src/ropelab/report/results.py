"""``results.jsonl``: one JSON record per finished unit of work, appended as it finishes.

Every record is written as one line ending in a newline, so a last line *without* its newline is a
write that a kill (or a full disk) cut short: a *torn tail*. Reading skips it; appending first moves
it to ``NAME.torn`` (with a warning) so that the new record starts on a line of its own, and the
unit whose record was torn, missing from the file, is computed again by the job that reads it.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_TAIL_CHUNK = 1 << 16


def _torn_tail_start(fh: Any, size: int) -> int | None:
    """Offset where the torn last line starts (after the last newline), or None if the file ends in one."""
    if size == 0:
        return None
    fh.seek(size - 1)
    if fh.read(1) == b"\n":
        return None
    end = size
    while end > 0:
        start = max(0, end - _TAIL_CHUNK)
        fh.seek(start)
        chunk = fh.read(end - start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _move_torn_tail(path: Path) -> None:
    """Cut a torn last line off ``path`` and append it (with a newline) to ``path.torn``; warn once."""
    with path.open("r+b") as fh:
        size = os.fstat(fh.fileno()).st_size
        start = _torn_tail_start(fh, size)
        if start is None:
            return
        fh.seek(start)
        fragment = fh.read(size - start)
        aside = path.with_name(path.name + ".torn")
        with aside.open("ab") as out:
            out.write(fragment + b"\n")
            out.flush()
            os.fsync(out.fileno())
        fh.truncate(start)
        fh.flush()
        os.fsync(fh.fileno())
    warnings.warn(
        f"{path}: the last record was torn (a run stopped while writing it); moved it to {aside.name} "
        "and the unit is computed again",
        RuntimeWarning,
        stacklevel=3,
    )


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one record and flush it to disk, so an interrupted run loses nothing already done.

    A torn last line left by an interrupted write is moved aside first (see the module doc).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
    if path.exists():
        _move_torn_tail(path)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # mode: the user's umask
    try:
        while line:  # one write in practice: the line is whole or torn, never interleaved
            line = line[os.write(fd, line) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a results file; a torn last line (no newline: a run killed mid-write) and lines that
    are not JSON objects are skipped."""
    path = Path(path)
    if not path.exists():
        return
    with path.open("rb") as fh:
        for raw in fh:
            if not raw.endswith(b"\n"):  # the torn tail
                return
            line = raw.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
            if isinstance(record, dict):
                yield record
