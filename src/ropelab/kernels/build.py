"""Build and load the C++ (OpenMP) rotary kernel on first use, with ``torch.utils.cpp_extension.load``.

The shared library is cached under ``$ROPELAB_KERNELS_DIR``, else ``$TORCH_EXTENSIONS_DIR/ropelab``, else
``$XDG_CACHE_HOME/ropelab/kernels`` (``~/.cache/ropelab/kernels``); its name carries a hash of the source,
the flags, the torch version and the CPU (the build uses ``-march=native``), so a cache shared between
different machines never loads a library built for another CPU. The first build takes ~15-30 s; later
processes load the cached library in well under a second.

What makes the cache safe to reuse:

* Several processes building at once wait on an ``flock`` (``DIR/ropelab.lock``) that the kernel drops
  when its holder dies, so an interrupted build (SIGTERM, kill -9, the OOM killer) never leaves a lock
  that later processes wait on forever; cpp_extension's own ``lock`` file, which does outlive its
  process, is removed under that flock as the leftover it then must be.
* A build records the sha256 of its library (``NAME.so.sha256``, written atomically after the build);
  a library is loaded only if it still has that hash. A truncated or replaced one is never mapped (no
  Bus error, none of its load-time code runs): it is rebuilt from source, with one warning.
* The cache folders are created private to the user (0700), and a cache folder of another user is not
  used; ``ROPELAB_KERNELS_PRIVATE=0`` lets a team share one cache (folders then follow the umask).

``ROPELAB_KERNELS=0`` disables the kernel (the ``auto`` backend then uses the torch path, and an explicit
``backend="cpp"`` raises). A failed build warns once per process and falls back; it never raises from the
``auto`` path. ``ROPELAB_KERNELS_WAIT`` (seconds, default 600) bounds the wait for another process's build.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import socket
import stat
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from ropelab.fsutil import atomic_write

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["KernelUnavailableError", "build_dir", "cpu_kernel", "cpu_kernel_error", "kernels_enabled"]

_SOURCE = Path(__file__).with_name("rope_cpu.cpp")
_BASE_FLAGS = ["-O3", "-ffp-contract=off"]  # no FMA contraction: a*c - b*s must round as the torch path
_LOCK_NAME = "ropelab.lock"
_lock = threading.Lock()
_state: dict[str, Any] = {"tried": False, "ops": None, "error": None}


class KernelUnavailableError(RuntimeError):
    """An explicitly requested kernel backend cannot run here (not built, wrong device or dtype)."""


def kernels_enabled() -> bool:
    """False when ``ROPELAB_KERNELS`` is ``0``/``false``/``no``/``off``."""
    return os.environ.get("ROPELAB_KERNELS", "1").strip().lower() not in ("0", "false", "no", "off")


def build_dir() -> Path:
    """Where the compiled kernels are cached (created on demand)."""
    if os.environ.get("ROPELAB_KERNELS_DIR"):
        return Path(os.environ["ROPELAB_KERNELS_DIR"])
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"]) / "ropelab"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ropelab" / "kernels"


def _cpu_id() -> str:
    """The CPU's feature flags (Linux), else the processor string: what ``-march=native`` depends on."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def _flag_sets() -> list[list[str]]:
    """Compiler flags to try, fastest first: native vectors with OpenMP, then portable, then serial."""
    native = ["-march=native"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        native.append(
            "-mprefer-vector-width=512"
        )  # AVX-512 CPUs: 16 floats per instruction (a no-op elsewhere)
    omp = ["-fopenmp"]
    return [_BASE_FLAGS + native + omp, _BASE_FLAGS + omp, _BASE_FLAGS]


def _name(flags: list[str]) -> str:
    digest = hashlib.sha256()
    for part in (
        _SOURCE.read_bytes(),
        " ".join(flags).encode(),
        torch.__version__.encode(),
        _cpu_id().encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    return f"ropelab_rope_cpu_{digest.hexdigest()[:16]}"


@contextlib.contextmanager
def _venv_on_path() -> Iterator[None]:
    """Put this interpreter's bin directory on PATH while building, so that the ``ninja`` that pip installed
    into a virtual environment is found when the environment is not activated."""
    bin_dir = str(Path(sys.executable).parent)
    if shutil.which("ninja") is not None or not (Path(bin_dir) / "ninja").exists():
        yield
        return
    old = os.environ.get("PATH", "")
    os.environ["PATH"] = os.pathsep.join((bin_dir, old)) if old else bin_dir
    try:
        yield
    finally:
        os.environ["PATH"] = old


def _build() -> tuple[Any, list[str]]:
    with _venv_on_path():
        return _build_first_that_compiles()


def _build_first_that_compiles() -> tuple[Any, list[str]]:
    """(ops, notes): the first flag set whose library loads or builds; notes say what was repaired."""
    errors: list[str] = []
    notes: list[str] = []
    for flags in _flag_sets():
        try:
            return _load_or_build(flags, notes), notes
        except Exception as exc:  # compiler missing, flags refused, ninja missing: try the next set
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            errors.append(f"[{' '.join(flags)}] {type(exc).__name__}: {' | '.join(lines[-3:])[:400]}")
    raise KernelUnavailableError("could not build the C++ rotary kernel:\n  " + "\n  ".join(notes + errors))


def _private() -> bool:
    """The cache is private to the user (folders 0700) unless ``ROPELAB_KERNELS_PRIVATE=0``."""
    return os.environ.get("ROPELAB_KERNELS_PRIVATE", "1").strip().lower() not in ("0", "false", "no", "off")


def _make_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, 0700 when private (existing folders are left alone)."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            folder.mkdir(mode=0o700 if _private() else 0o777)
    if not path.is_dir():
        raise KernelUnavailableError(f"the kernel cache {path} is not a folder")
    info = path.stat()
    if _private() and hasattr(os, "getuid"):
        if info.st_uid != os.getuid():
            raise KernelUnavailableError(
                f"the kernel cache {path} belongs to another user; set ROPELAB_KERNELS_DIR to a folder of "
                "yours (or ROPELAB_KERNELS_PRIVATE=0 to share one)"
            )
        if info.st_mode & 0o022:  # others could replace what we load
            path.chmod(stat.S_IMODE(info.st_mode) & ~0o022)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _record_path(library: Path) -> Path:
    return library.with_name(library.name + ".sha256")


def _verified(library: Path) -> bool:
    """True if ``library`` has the sha256 recorded when it was built (read without loading it)."""
    try:
        recorded = _record_path(library).read_text().split()[0]
        return recorded == _sha256(library)
    except (OSError, IndexError):
        return False


@contextlib.contextmanager
def _cache_lock(directory: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``DIR/ropelab.lock`` around loading or building into ``directory``.

    The kernel drops it when its holder dies (kill -9, OOM killer), so unlike cpp_extension's own
    ``lock`` file it never outlives a build; a live builder is waited for up to
    ``ROPELAB_KERNELS_WAIT`` seconds (default 600), then the torch path is used.
    """
    if fcntl is None:  # pragma: no cover - Windows: cpp_extension's lock only
        yield
        return
    wait = float(os.environ.get("ROPELAB_KERNELS_WAIT", "600"))
    fd = os.open(directory / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600 if _private() else 0o666)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    holder = os.pread(fd, 100, 0).decode(errors="replace").strip() or "another process"
                    raise KernelUnavailableError(
                        f"{holder} has been building the kernel in {directory} for over {wait:g} s"
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock


def _load_or_build(flags: list[str], notes: list[str]) -> Any:
    """Load this flag set's cached library if its hash checks out, else (re)build it and record the hash.

    Nothing unverified is ever loaded: a library that is truncated (a Bus error when mapped) or
    replaced (its load-time code would run) fails the check, and the folder is rebuilt from source.
    """
    from torch.utils.cpp_extension import load

    directory = build_dir() / _name(flags)
    _make_dirs(directory)
    library = directory / f"{directory.name}.so"
    with _cache_lock(directory):
        if library.exists() and _verified(library):
            torch.ops.load_library(str(library))
            return _ops()
        if library.exists() and _record_path(library).exists():
            notes.append(
                f"{library} does not match the sha256 recorded when it was built (truncated or replaced): "
                "not loaded; building it again"
            )
        elif library.exists():
            notes.append(
                f"{library} has no recorded sha256 (built by an older ropelab, or its build was "
                "interrupted): not loaded; building it again"
            )
        stale = directory / "lock"  # cpp_extension's; under our lock, no live build owns it
        if stale.exists():
            notes.append(f"removed the lock {stale} of an interrupted build (its process is gone)")
        for entry in directory.iterdir():  # a clean folder: no half-built or foreign object is reused
            if entry.name == _LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        ldflags = ["-fopenmp"] if "-fopenmp" in flags else []
        load(
            name=directory.name,
            sources=[str(_SOURCE)],
            extra_cflags=flags,
            extra_ldflags=ldflags,
            build_directory=str(directory),
            is_python_module=False,
            verbose=False,
        )
        ops = _ops()
        if library.exists():
            atomic_write(_record_path(library), f"{_sha256(library)}  {library.name}\n")
        return ops


def _ops() -> Any:
    """``torch.ops.ropelab_kernels``, checked to hold the two ops (a stray library would not)."""
    ops = torch.ops.ropelab_kernels
    for op in ("rotary_out", "rotary_"):
        getattr(ops, op)  # raises if the library did not register it
    return ops


def cpu_kernel() -> Any | None:
    """``torch.ops.ropelab_kernels`` (ops ``rotary_out``, ``rotary_``), building it on first call.

    Returns ``None`` when kernels are disabled or the build failed. At most one warning per process:
    the build failed (the torch path is used), or a damaged cache entry or an interrupted build's
    lock was found and repaired.
    """
    if not kernels_enabled():
        return None
    if _state["tried"]:
        return _state["ops"]
    with _lock:
        if not _state["tried"]:
            try:
                _state["ops"], notes = _build()
                if notes:
                    warnings.warn("ropelab: " + "; ".join(notes), RuntimeWarning, stacklevel=3)
            except Exception as exc:
                _state["error"] = str(exc)
                warnings.warn(
                    f"ropelab: {exc}\nUsing the torch path for RoPE (same results, slower). "
                    "Set ROPELAB_KERNELS=0 to skip this attempt.",
                    RuntimeWarning,
                    stacklevel=3,
                )
            _state["tried"] = True
    return _state["ops"]


def cpu_kernel_error() -> str | None:
    """Why the C++ kernel is unavailable (``None`` if it loaded or was not tried yet)."""
    if not kernels_enabled():
        return "disabled by ROPELAB_KERNELS=0"
    return _state["error"]
