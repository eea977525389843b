"""Files a run writes: atomic replacement, modes that follow the umask, one process per folder.

* :func:`atomic_write` / :func:`atomic_open`: write a temporary file next to the target, flush and
  ``fsync`` it, then ``os.replace`` it over the target and ``fsync`` the folder: a reader (or a
  restart after kill -9 or a power cut) sees the old file or the new one, never half of one.
* :func:`file_mode` and :func:`follow_umask`: the mode a file gets from ``open()`` under the user's
  umask (``0o666 & ~umask``), for files that a library (safetensors) creates ``0600`` regardless.
* :func:`folder_lock`: an exclusive ``fcntl.flock`` on ``FOLDER/.lock``. The kernel releases it when
  its process ends however it ends (kill -9 included), so a lock is never stale; the file holds the
  owner's pid, host, command and start time for the message a second process gets. Re-entrant in
  one process (flock would otherwise refuse a second open of the same file in the same process).

The bottom layer: imports nothing of ropelab but its error type.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ropelab.errors import RopeConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks; runs are not guarded there
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "FolderBusyError",
    "atomic_open",
    "atomic_write",
    "current_umask",
    "file_mode",
    "folder_lock",
    "follow_umask",
    "fsync_folder",
]

LOCK_NAME = ".lock"


class FolderBusyError(RopeConfigError):
    """Another live process holds the folder's lock."""


def current_umask() -> int:
    """The process's umask (read from ``/proc`` where there is one, so nothing is changed even briefly)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode ``open()`` gives a new file: ``0o666 & ~umask``."""
    return 0o666 & ~current_umask()


def follow_umask(*paths: str | Path) -> None:
    """Give files that a library created with a fixed mode the mode the user's umask asks for."""
    mode = file_mode()
    for path in paths:
        p = Path(path)
        if p.is_file() and not p.is_symlink():
            p.chmod(mode)


def fsync_folder(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "wb", **kwargs: Any) -> Iterator[IO[Any]]:
    """A file object for ``path`` that replaces it atomically on a clean exit (see the module doc).

    The temporary file is ``NAME.tmp`` in the same folder (one writer per folder: :func:`folder_lock`);
    on an exception it is removed and ``path`` is untouched. ``mode`` is ``"wb"`` or ``"w"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_folder(path.parent)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Replace ``path`` with ``data`` atomically (text is written as UTF-8)."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


# --- one process per folder ---------------------------------------------------------------------

_held: dict[str, tuple[int, int]] = {}  # real path of the lock file -> (fd, depth)
_held_guard = threading.Lock()


def _describe_holder(fd: int) -> str:
    try:
        raw = os.pread(fd, 4096, 0).decode("utf-8", "replace")
        info = json.loads(raw)
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(float(info["since"])))
        return (
            f"pid {int(info['pid'])} on {info.get('host', '?')}, `{info.get('command', '?')}`, since {since}"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "pid unknown"


@contextlib.contextmanager
def folder_lock(folder: str | Path, *, command: str | None = None) -> Iterator[Path]:
    """Hold ``FOLDER/.lock`` for the block: one process per output folder.

    Creates ``folder`` if needed. A second process gets :class:`FolderBusyError` at once, naming the
    holder (pid, host, command, start time); the lock dies with its process, so nothing needs
    cleaning after a crash. The same process may nest it (the lab's fine-tuning inside the lab).
    """
    folder = Path(folder)
    lock_path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RopeConfigError(f"cannot use {folder} as an output folder: {err.strerror or err}") from None
    if fcntl is None:  # pragma: no cover
        yield lock_path
        return
    key = os.path.realpath(lock_path)
    with _held_guard:
        if key in _held:
            fd, depth = _held[key]
            _held[key] = (fd, depth + 1)
            nested = True
        else:
            nested = False
    if not nested:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as err:
            raise RopeConfigError(f"cannot write in {folder}: {err.strerror or err}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(fd)
            os.close(fd)
            raise FolderBusyError(
                f"{folder} is in use by another ropelab run ({holder}); wait for it to finish or use "
                "another --out"
            ) from None
        except OSError:
            os.close(fd)
            raise
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": command or " ".join(["ropelab", *sys.argv[1:]])[:300],
            "since": time.time(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        with _held_guard:
            _held[key] = (fd, 1)
    try:
        yield lock_path
    finally:
        with _held_guard:
            fd, depth = _held[key]
            if depth > 1:
                _held[key] = (fd, depth - 1)
            else:
                del _held[key]
                os.close(fd)  # closing the last descriptor releases the flock
