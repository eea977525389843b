"""A sweep across processes: ``torchrun --nproc_per_node=K -m ropelab eval|passkey`` splits its units.

A sweep is a list of units (``eval``: method x document; ``passkey``: method x length x depth), each
written as one row the moment it is done and skipped by a rerun that finds its resume key. Under
``torchrun`` (:func:`ropelab.train.distributed.join`) every rank loads the model on its own device
(``cuda:LOCAL_RANK`` where there is CUDA, else the CPU) and:

- rank 0 holds the output folder's lock for the job (:func:`job_lock`; a second job is refused on every
  rank), reads which units are done and sends the list of pending units to every rank (:func:`my_share`);
- rank r computes pending units r, r + K, r + 2K, ... (in the sweep's order, so a rank extends the model
  once per method) and appends each unit's row as soon as it is done (:func:`append_row`: under an
  exclusive ``flock`` on the file, so rows of different ranks never interleave, and a torn tail left by
  a killed rank is moved aside by whoever appends next);
- after a barrier, rank 0 reads every unit's row back and writes what is built from them (``eval``'s
  per-method aggregates; the report and plots), and every rank returns the same records.

:func:`run_cells` is that loop for a grid of cells of one row each (``passkey``, ``tasks``), with
:func:`done_rows` (the rows a rerun reuses); ``eval`` runs its own (documents batched per method, and the
per-method aggregates written as their documents come in).

Every row carries rank 0's run context (:func:`shared_context`): rows and resume keys are those one
process on rank 0's device writes, so a sweep started with K processes resumes with any other number,
one included. Killed at any point, a sweep loses only the units in flight; the same command (any K)
computes the rest: no unit is computed twice. The output folder must be one that every rank sees (one
machine, or a file system shared by the nodes with working ``flock``); rank 0 refuses to finish if a
rank's rows are missing from it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from ropelab.errors import RopeConfigError
from ropelab.fsutil import folder_lock
from ropelab.hf import Extension, extend
from ropelab.registry import MethodSpec
from ropelab.report import append_jsonl, progress_bar, read_jsonl
from ropelab.report.provenance import is_current
from ropelab.train.distributed import Dist, barrier, broadcast_object, sum_over_ranks

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks (and no gloo multi-process runs)
    fcntl = None  # type: ignore[assignment]

__all__ = ["Cell", "append_row", "done_rows", "job_lock", "my_share", "run_cells", "shared_context"]

T = TypeVar("T")


@contextlib.contextmanager
def job_lock(out: str | Path, d: Dist) -> Iterator[None]:
    """:func:`ropelab.fsutil.folder_lock` on ``out`` for the job: taken by rank 0 (the only process
    in a one-process run); when the folder is busy every rank raises the same one-line error."""
    if not d.distributed:
        with folder_lock(out):
            yield
        return
    with contextlib.ExitStack() as stack:
        problem: RopeConfigError | None = None
        if d.main:
            try:
                stack.enter_context(folder_lock(out))
            except RopeConfigError as err:
                problem = err
        message = broadcast_object(None if problem is None else str(problem), d)
        if problem is not None:
            raise problem
        if message is not None:
            raise RopeConfigError(message)
        yield


def _device_kind(device: str) -> str:
    return str(device).split(":")[0]


def shared_context(context: Mapping[str, Any], d: Dist) -> dict[str, Any]:
    """Rank 0's run context, on every rank (rows and keys as one process on rank 0's device).

    A rank whose own context differs in more than the device's index and the thread count (another
    dtype, model files, versions, corpus) is refused on every rank: its numbers would not be rank 0's.
    """
    first = dict(broadcast_object(dict(context), d))
    if not d.distributed:
        return first

    def comparable(c: Mapping[str, Any]) -> dict[str, Any]:
        return {**c, "device": _device_kind(c["device"]), "threads": None}

    differs = comparable(context) != comparable(first)
    bad = sum_over_ranks(torch.tensor([float(differs)], device=d.device), d)
    if float(bad.item()) > 0:
        what = sorted(k for k in first if comparable(context).get(k) != comparable(first).get(k))
        mine = f"rank {d.rank} differs from rank 0 in {', '.join(what)}" if what else "another rank differs"
        raise RopeConfigError(
            f"the ranks do not compute alike ({mine}); give every rank the same model and dtype"
        )
    return first


def my_share(pending: Sequence[T], d: Dist) -> list[T]:
    """This rank's units of rank 0's ``pending`` list: items r, r + K, ... (all of them in one process)."""
    everything = list(broadcast_object(list(pending), d))
    return everything[d.rank :: d.world]


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """A blocking exclusive ``flock`` on ``path`` (created if missing) for the block."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # mode: the user's umask
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def append_row(path: str | Path, row: Mapping[str, Any], d: Dist) -> None:
    """:func:`ropelab.report.append_jsonl`; with several ranks, one rank at a time (see the module doc)."""
    if not d.distributed:
        append_jsonl(path, dict(row))
        return
    with _exclusive(Path(path)):
        append_jsonl(path, dict(row))


class Cell(Protocol):
    """What :func:`run_cells` needs of a cell: its resume key and its method (any other fields are the
    caller's, e.g. a ``NamedTuple`` of method, length, depth and key)."""

    @property
    def key(self) -> str: ...

    @property
    def spec(self) -> MethodSpec: ...


C = TypeVar("C", bound=Cell)


def done_rows(result_file: str | Path, command: str) -> dict[str, dict[str, Any]]:
    """The rows of ``result_file`` a rerun of ``command`` reuses, by resume key: that command's rows of the
    current layout (:func:`~ropelab.report.provenance.is_current`); a later row of a key wins."""
    return {r["key"]: r for r in read_jsonl(result_file) if r.get("command") == command and is_current(r)}


def run_cells(
    cells: Sequence[C],
    compute: Callable[[C, Extension], dict[str, Any]],
    result_file: Path,
    d: Dist,
    *,
    model: Any,
    extensions: Mapping[str, Extension],
    command: str,
    progress: bool,
    postfix: Callable[[C], str],
) -> list[dict[str, Any]]:
    """Every cell's row, in the order of ``cells``, on every rank (see the module doc).

    Rank 0 (the only process of a one-process run) reads the cells already in ``result_file``
    (:func:`done_rows` of ``command``) and hands out the rest (:func:`my_share`); this rank computes its
    share in the order of ``cells``: ``compute(cell, ext)`` with ``model`` extended by ``ext =
    extensions[cell.spec.label]`` (switched only where the method changes, back to ``none`` at the end)
    returns the cell's stamped row, appended at once (:func:`append_row`). Rank 0's progress bar (named
    ``command``, with ``postfix(cell)`` beside it) counts every rank's cells. Raises if a cell's row is
    missing after every rank finished (ranks writing to different folders).
    """
    done = done_rows(result_file, command) if d.main else {}
    mine = my_share([i for i, c in enumerate(cells) if c.key not in done], d)
    bar = progress_bar(len(cells), desc=command, unit="cells", disable=not (progress and d.main))
    shown = sum(c.key in done for c in cells)
    bar.update(shown)
    current: MethodSpec | None = None
    for i in mine:
        cell = cells[i]
        ext = extensions[cell.spec.label]
        if cell.spec is not current:
            extend(model, ext)
            current = cell.spec
        bar.set_postfix_str(postfix(cell))
        row = compute(cell, ext)
        append_row(result_file, row, d)
        done[cell.key] = row
        if d.main:
            if d.distributed:
                done = done_rows(result_file, command)  # the other ranks' too
            now = sum(c.key in done for c in cells)
            bar.update(now - shown)
            shown = now
    if current is not None:
        extend(model, "none")
    bar.close()
    barrier(d)  # every rank's cells are in the file
    records = None
    if d.main:
        done = done_rows(result_file, command) if d.distributed else done
        missing = sum(c.key not in done for c in cells)
        if missing:
            raise RopeConfigError(
                f"{missing} cells are missing from {result_file} after every rank finished: under torchrun "
                "every rank must write to the same --out folder"
            )
        records = [done[c.key] for c in cells]
    return list(broadcast_object(records, d))
