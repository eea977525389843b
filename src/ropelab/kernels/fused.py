"""Calling the fused kernels, with autograd: the gradient of a rotation is the rotation by ``-angle``.

Every function here takes the kernels' view of the inputs: ``x`` ``[b, h, s, d]`` (any strides, contiguous
last dim) and tables ``cos``/``sin`` ``[B, s, r/2]`` contiguous, already in the kernel's table dtype
(:func:`ropelab.rope.apply` prepares them). The kernels do not differentiate through ``cos``/``sin``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ropelab.kernels.build import KernelUnavailableError, cpu_kernel, cpu_kernel_error

__all__ = [
    "KERNEL_DTYPES",
    "fused_rotate",
    "fused_rotate_",
    "launcher",
    "triton_available",
    "triton_error",
    "triton_usable",
]

#: ``launch(x, cos, sin, out, interleaved, upcast)``: rotate into ``out``, or in place when it is ``None``.
Launcher = Callable[[Tensor, Tensor, Tensor, "Tensor | None", bool, bool], None]

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def triton_available() -> bool:
    """Whether the ``triton`` package is installed (it is imported only when a kernel is launched)."""
    return importlib.util.find_spec("triton") is not None


@functools.cache
def triton_error() -> str | None:
    """Why the Triton kernel cannot be imported (``None`` when it can): triton missing, or an install
    whose import fails (a version without ``triton.language``, a broken CUDA toolchain). Tried once per
    process, and only when a tensor could take the kernel (CUDA, or the interpreter)."""
    if not triton_available():
        return "the triton package is not installed"
    try:
        importlib.import_module("ropelab.kernels.triton_rope")
    except Exception as err:  # whatever a broken triton install raises on import
        return f"import of triton failed ({type(err).__name__}: {err})"
    return None


def triton_usable(x: Tensor) -> bool:
    """Triton can run on ``x``: a CUDA tensor, or a CPU tensor under ``TRITON_INTERPRET=1``, and the
    kernel module imports (:func:`triton_error`)."""
    on_device = x.device.type == "cuda" or (
        x.device.type == "cpu" and os.environ.get("TRITON_INTERPRET") == "1"
    )
    return on_device and triton_error() is None


def _launch_cpp(x: Tensor, cos: Tensor, sin: Tensor, out: Tensor | None, interleaved: bool, up: bool) -> None:
    ops: Any = cpu_kernel()
    if ops is None:
        raise KernelUnavailableError(f"the C++ rotary kernel is unavailable: {cpu_kernel_error()}")
    if out is None:
        ops.rotary_(x, cos, sin, interleaved, up)
    else:
        ops.rotary_out(x, cos, sin, out, interleaved, up)


def _launch_triton(
    x: Tensor, cos: Tensor, sin: Tensor, out: Tensor | None, interleaved: bool, up: bool
) -> None:
    from ropelab.kernels.triton_rope import rotate_triton

    rotate_triton(x, cos, sin, out, interleaved, up)


def launcher(backend: str) -> Launcher:
    """The launch function of kernel backend ``"cpp"`` or ``"triton"``."""
    return {"cpp": _launch_cpp, "triton": _launch_triton}[backend]


class _FusedRotary(torch.autograd.Function):
    """Out-of-place fused rotation, differentiable in ``x`` (the tables are constants)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, cos: Tensor, sin: Tensor, backend: str, interleaved: bool, upcast: bool
    ) -> Tensor:
        out = torch.empty_like(x)
        launcher(backend)(x, cos, sin, out, interleaved, upcast)
        ctx.save_for_backward(cos, sin)
        ctx.config = (backend, interleaved, upcast)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None, None, None]:
        cos, sin = ctx.saved_tensors
        if grad.stride(-1) != 1:
            grad = grad.contiguous()
        # R(a)^T = R(-a): cos(-a) = cos a, sin(-a) = -sin a. Through apply, so double backward works.
        grad_x = _FusedRotary.apply(grad, cos, -sin, *ctx.config)
        return grad_x, None, None, None, None, None


def fused_rotate(
    x: Tensor, cos: Tensor, sin: Tensor, *, backend: str, interleaved: bool, upcast: bool
) -> Tensor:
    """``x`` ``[b, h, s, d]`` rotated into a new tensor (``torch.empty_like(x)``: same strides)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _FusedRotary.apply(x, cos, sin, backend, interleaved, upcast)
    out = torch.empty_like(x)
    launcher(backend)(x, cos, sin, out, interleaved, upcast)
    return out


def fused_rotate_(
    x: Tensor, cos: Tensor, sin: Tensor, *, backend: str, interleaved: bool, upcast: bool
) -> None:
    """Rotate ``x`` ``[b, h, s, d]`` in place (not recorded by autograd: callers use it without grad)."""
    launcher(backend)(x, cos, sin, None, interleaved, upcast)
