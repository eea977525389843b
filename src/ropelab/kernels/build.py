"""Build and load the C++ (OpenMP) rotary kernel on first use, with ``torch.utils.cpp_extension.load``.

The shared library is cached under ``$ROPELAB_KERNELS_DIR``, else ``$TORCH_EXTENSIONS_DIR/ropelab``, else
``$XDG_CACHE_HOME/ropelab/kernels`` (``~/.cache/ropelab/kernels``); its name carries a hash of the source,
the flags, the torch version and the CPU (the build uses ``-march=native``), so a cache shared between
different machines never loads a library built for another CPU. The first build takes ~15-30 s; later
processes load the cached library in well under a second. Several processes building at once wait on
cpp_extension's lock file.

``ROPELAB_KERNELS=0`` disables the kernel (the ``auto`` backend then uses the torch path, and an explicit
``backend="cpp"`` raises). A failed build warns once per process and falls back; it never raises from the
``auto`` path.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import shutil
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["KernelUnavailableError", "build_dir", "cpu_kernel", "cpu_kernel_error", "kernels_enabled"]

_SOURCE = Path(__file__).with_name("rope_cpu.cpp")
_BASE_FLAGS = ["-O3", "-ffp-contract=off"]  # no FMA contraction: a*c - b*s must round as the torch path
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


def _build() -> Any:
    with _venv_on_path():
        return _build_first_that_compiles()


def _build_first_that_compiles() -> Any:
    from torch.utils.cpp_extension import load

    errors = []
    for flags in _flag_sets():
        directory = build_dir() / _name(flags)
        directory.mkdir(parents=True, exist_ok=True)
        ldflags = ["-fopenmp"] if "-fopenmp" in flags else []
        try:
            load(
                name=directory.name,
                sources=[str(_SOURCE)],
                extra_cflags=flags,
                extra_ldflags=ldflags,
                build_directory=str(directory),
                is_python_module=False,
                verbose=False,
            )
            return torch.ops.ropelab_kernels
        except Exception as exc:  # compiler missing, flags refused, ninja missing: try the next set
            lines = [line for line in str(exc).strip().splitlines() if line.strip()]
            errors.append(f"[{' '.join(flags)}] {type(exc).__name__}: {' | '.join(lines[-3:])[:400]}")
    raise KernelUnavailableError("could not build the C++ rotary kernel:\n  " + "\n  ".join(errors))


def cpu_kernel() -> Any | None:
    """``torch.ops.ropelab_kernels`` (ops ``rotary_out``, ``rotary_``), building it on first call.

    Returns ``None`` when kernels are disabled or the build failed (warned once per process).
    """
    if not kernels_enabled():
        return None
    if _state["tried"]:
        return _state["ops"]
    with _lock:
        if not _state["tried"]:
            try:
                _state["ops"] = _build()
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
