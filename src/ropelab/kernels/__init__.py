"""Fused RoPE kernels behind ``ropelab.apply_rotary(..., backend=...)``.

* ``"cpp"``: a C++/OpenMP CPU kernel (``rope_cpu.cpp``), JIT-built on first use and cached
  (:mod:`ropelab.kernels.build`); one read and one write of q and k, tables shared by all heads.
* ``"triton"``: a Triton kernel for CUDA tensors (:mod:`ropelab.kernels.triton_rope`); ``triton`` is an
  optional dependency (the ``dev`` extra).

Both give the same bits as the torch path (:func:`ropelab.rope.apply.rotate`) in float32, bfloat16 and
float16, in both rounding modes (``upcast=False``: each product rounded to the input dtype, as
transformers; ``upcast=True``: float32 arithmetic, one rounding), so the backend never changes a result.
"""

from ropelab.kernels.build import (
    KernelUnavailableError,
    build_dir,
    cpu_kernel,
    cpu_kernel_error,
    kernels_enabled,
)
from ropelab.kernels.fused import (
    KERNEL_DTYPES,
    fused_rotate,
    fused_rotate_,
    triton_available,
    triton_error,
    triton_usable,
)

__all__ = [
    "KERNEL_DTYPES",
    "KernelUnavailableError",
    "build_dir",
    "cpu_kernel",
    "cpu_kernel_error",
    "fused_rotate",
    "fused_rotate_",
    "kernels_enabled",
    "triton_available",
    "triton_error",
    "triton_usable",
]
