"""Applying rotary position embeddings (RoPE) to query/key tensors.

RoPE (Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position Embedding",
arXiv:2104.09864) rotates each pair of channels ``(a, b)`` of a query or key at position ``m``
by the angle ``m * theta_i``::

    a' = a * cos - b * sin
    b' = b * cos + a * sin

so that the score ``<R_m q, R_n k>`` depends only on ``m - n``.

Shapes
------
``x`` (``q`` or ``k``): ``[b, h, s, d]`` when ``heads_dim=1`` (default), ``[b, s, h, d]`` when
``heads_dim=2``. ``q`` and ``k`` may have different head counts (GQA/MQA).

``cos``, ``sin``: *half* tables, ``[s, r/2]`` or ``[b, s, r/2]`` (per-batch position ids), where
``r = 2 * cos.shape[-1]`` is the rotary dim, ``r <= d``. Entry ``[..., p, i]`` is the cosine/sine of the
angle of pair ``i`` at sequence slot ``p``; any attention scaling is already folded in. Only the
first ``r`` channels rotate; channels ``r..d`` are copied through bit for bit (partial rotary).

Layouts (which channels form pair ``i``, for ``i < r/2``):

* ``"half"`` (GPT-NeoX, LLaMA in transformers): ``(x[i], x[i + r/2])``.
* ``"interleaved"`` (GPT-J, RoFormer, Meta LLaMA): ``(x[2i], x[2i + 1])``.

Compute dtype: ``cos``/``sin`` are cast to ``x.dtype`` and the arithmetic runs in ``x.dtype`` (as in
transformers, whose rotary embedding returns cos/sin in the model dtype). Each product and sum is
rounded in the same order as ``q * cos + rotate_half(q) * sin``, so for the ``"half"`` layout the
result equals transformers' ``apply_rotary_pos_emb`` bit for bit, also in bf16/fp16.

No ``rotate_half`` copy and no full-width cos/sin are built: the pairs are read through slices of
``x`` and written into slices of a preallocated output (or of ``x`` itself, for ``apply_rotary_``).

``upcast=True`` computes bf16/fp16 inputs in float32 from float32 tables and rounds once (more accurate,
no longer transformers' bits); float32/float64 inputs are unaffected.

Backends (``backend=``): ``"torch"`` (the reference above, any dtype and device), ``"cpp"`` (a fused
C++/OpenMP kernel, CPU), ``"triton"`` (a fused Triton kernel, CUDA), ``"auto"`` (default: ``"cpp"`` for CPU
tensors of at least :data:`AUTO_MIN_ELEMENTS` elements when the kernel builds, ``"triton"`` for CUDA
tensors when the Triton kernel imports, else ``"torch"``; ``ROPELAB_KERNELS=0`` makes ``auto`` take the torch
path on every device). The kernels compute exactly the torch path's bits in
float32/bf16/fp16 and both rounding modes, so the backend changes the speed, never the result. They do
not differentiate through ``cos``/``sin``, and :func:`apply_rotary_` under autograd is recorded by the
torch path: in those cases every backend falls back to ``"torch"``. Out of place, the kernels are
differentiable in ``q``/``k`` (the backward rotates by ``-angle`` with the same kernel).
"""

from __future__ import annotations

import torch
from torch import Tensor

from ropelab.errors import RopeConfigError
from ropelab.kernels import (
    KERNEL_DTYPES,
    KernelUnavailableError,
    cpu_kernel,
    fused_rotate,
    fused_rotate_,
    kernels_enabled,
    triton_usable,
)
from ropelab.kernels import fused as _fused

__all__ = ["AUTO_MIN_ELEMENTS", "BACKENDS", "apply_rotary", "apply_rotary_", "rotate"]

_LAYOUTS = ("half", "interleaved")
BACKENDS = ("auto", "torch", "cpp", "triton")
#: ``backend="auto"`` takes the C++ kernel for CPU tensors of at least this many elements (below, the
#: torch path is fast enough, and a small call never triggers the kernel's one-time build).
AUTO_MIN_ELEMENTS = 1 << 16


def _validate(x: Tensor, cos: Tensor, sin: Tensor, layout: str, heads_dim: int) -> int:
    """Check the inputs; return the rotary dim ``r``."""
    if layout not in _LAYOUTS:
        raise RopeConfigError(f"unknown rotary layout {layout!r}; valid choices: {', '.join(_LAYOUTS)}")
    if heads_dim not in (1, 2):
        raise RopeConfigError(f"heads_dim must be 1 ([b, h, s, d]) or 2 ([b, s, h, d]), got {heads_dim}")
    if x.ndim != 4:
        raise RopeConfigError(
            f"expected a 4-d tensor [b, h, s, d] or [b, s, h, d], got shape {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise RopeConfigError(f"rotary embedding needs a floating-point tensor, got {x.dtype}")
    if cos.shape != sin.shape:
        raise RopeConfigError(f"cos and sin shapes differ: {tuple(cos.shape)} vs {tuple(sin.shape)}")
    if cos.ndim not in (2, 3):
        raise RopeConfigError(f"cos/sin must be [s, r/2] or [b, s, r/2], got shape {tuple(cos.shape)}")
    half = cos.shape[-1]
    r, d = 2 * half, x.shape[-1]
    if half == 0:
        raise RopeConfigError("cos/sin tables are empty (rotary dim 0)")
    if r > d:
        raise RopeConfigError(f"rotary dim {r} (2 * cos.shape[-1]) exceeds head dim {d}")
    s = x.shape[3 - heads_dim]  # sequence dim: 2 for [b, h, s, d], 1 for [b, s, h, d]
    if cos.shape[-2] != s:
        raise RopeConfigError(
            f"cos/sin cover {cos.shape[-2]} positions but the input has sequence length {s}"
        )
    if cos.ndim == 3 and cos.shape[0] not in (1, x.shape[0]):
        raise RopeConfigError(
            f"per-batch cos/sin have batch {cos.shape[0]} but the input has batch {x.shape[0]}"
        )
    return r


def _prepare(
    x: Tensor, cos: Tensor, sin: Tensor, layout: str, heads_dim: int, dtype: torch.dtype | None = None
) -> tuple[Tensor, Tensor, int]:
    """Validate the inputs; return cos/sin in ``dtype`` (default ``x.dtype``) broadcastable to
    ``x[..., :r/2]``, and ``r``."""
    r = _validate(x, cos, sin, layout, heads_dim)
    if cos.ndim == 2:
        cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
    # [b, s, r/2] -> [b, 1, s, r/2] (heads_dim=1) or [b, s, 1, r/2] (heads_dim=2)
    cos, sin = cos.unsqueeze(heads_dim), sin.unsqueeze(heads_dim)
    dtype = dtype or x.dtype
    return cos.to(dtype), sin.to(dtype), r


def _upcasts(x: Tensor, upcast: bool) -> bool:
    return upcast and x.dtype in (torch.bfloat16, torch.float16)


def _kernel_backend(backend: str, x: Tensor, cos: Tensor, sin: Tensor, *, inplace: bool) -> str | None:
    """The fused backend to run on ``x`` (``"cpp"``/``"triton"``), or ``None`` for the torch path.

    ``auto`` never raises; an explicit ``"cpp"``/``"triton"`` raises :class:`KernelUnavailableError` when
    it cannot run on ``x`` (device, dtype, layout, not built). Every backend takes the torch path where the
    kernels do not apply: gradients for cos/sin, in place under autograd, in place on an expanded tensor.
    """
    if backend not in BACKENDS:
        raise RopeConfigError(f"unknown rotary backend {backend!r}; valid choices: {', '.join(BACKENDS)}")
    grad = torch.is_grad_enabled()
    if backend == "torch" or (
        grad and (cos.requires_grad or sin.requires_grad or (inplace and x.requires_grad))
    ):
        return None
    if inplace and any(st == 0 and n > 1 for st, n in zip(x.stride(), x.shape, strict=True)):
        return None  # an expanded tensor: the torch path raises the proper error
    if backend == "auto":
        if torch.compiler.is_compiling() or x.dtype not in KERNEL_DTYPES or x.stride(-1) != 1:
            return None
        if x.device.type == "cpu":
            return "cpp" if x.numel() >= AUTO_MIN_ELEMENTS and cpu_kernel() is not None else None
        if x.device.type == "cuda" and kernels_enabled() and triton_usable(x):
            return "triton"
        return None
    if x.dtype not in KERNEL_DTYPES:
        raise KernelUnavailableError(
            f"backend {backend!r} supports float32, bfloat16, float16; got {x.dtype}"
        )
    if x.stride(-1) != 1:
        raise KernelUnavailableError(f"backend {backend!r} needs a contiguous last dim (head_dim)")
    if backend == "cpp" and x.device.type != "cpu":
        raise KernelUnavailableError(f"backend 'cpp' runs on CPU tensors, got {x.device}")
    if backend == "triton" and not triton_usable(x):
        raise KernelUnavailableError(
            "backend 'triton' needs the triton package and a CUDA tensor (or TRITON_INTERPRET=1), "
            f"got {x.device}" + (f"; {_fused.triton_error()}" if _fused.triton_error() else "")
        )
    return backend


def _kernel_tables(x: Tensor, cos: Tensor, sin: Tensor, upcast: bool) -> tuple[Tensor, Tensor]:
    """cos/sin as the kernels take them: ``[B, s, r/2]`` contiguous on ``x``'s device, float32 when
    computing in float32, else in ``x.dtype`` (rounded there, as the torch path does)."""
    dtype = torch.float32 if (_upcasts(x, upcast) or x.dtype == torch.float32) else x.dtype
    if cos.ndim == 2:
        cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
    cos = cos.to(device=x.device, dtype=dtype).contiguous()
    sin = sin.to(device=x.device, dtype=dtype).contiguous()
    return cos, sin


def _heads_first(x: Tensor, heads_dim: int) -> Tensor:
    """``[b, h, s, d]`` view of ``x`` (a transpose for ``heads_dim=2``; the kernels take any strides)."""
    return x if heads_dim == 1 else x.transpose(1, 2)


def _pairs(x: Tensor, r: int, layout: str) -> tuple[Tensor, Tensor]:
    """Views ``(first, second)`` of the pair members of ``x``, each ``[..., r/2]``."""
    if layout == "half":
        return x[..., : r // 2], x[..., r // 2 : r]
    return x[..., 0:r:2], x[..., 1:r:2]


def rotate(
    x: Tensor,
    cos: Tensor,
    sin: Tensor,
    *,
    layout: str = "half",
    heads_dim: int = 1,
    backend: str = "auto",
    upcast: bool = False,
) -> Tensor:
    """Return ``x`` (``[b, h, s, d]`` or ``[b, s, h, d]``) rotated by the half tables ``cos``/``sin``.

    ``cos``/``sin``: ``[s, r/2]`` or ``[b, s, r/2]``. Output has the shape and dtype of ``x``; channels
    ``r..d`` are copied unchanged. ``backend``/``upcast``: see the module docstring (the result does not
    depend on ``backend``). Raises ``RopeConfigError`` (a ``ValueError``) on inconsistent shapes or an
    unknown layout/backend.
    """
    r = _validate(x, cos, sin, layout, heads_dim)
    kernel = _kernel_backend(backend, x, cos, sin, inplace=False)
    if kernel is not None:
        c, s = _kernel_tables(x, cos, sin, upcast)
        out = fused_rotate(
            _heads_first(x, heads_dim),
            c,
            s,
            backend=kernel,
            interleaved=layout == "interleaved",
            upcast=upcast,
        )
        return _heads_first(out, heads_dim)
    if _upcasts(x, upcast):
        c, s, r = _prepare(x, cos, sin, layout, heads_dim, torch.float32)
        rotated = _rotate_torch(x[..., :r].float(), c, s, r, layout).to(x.dtype)
        if r == x.shape[-1]:
            return rotated
        if torch.is_grad_enabled() and (x.requires_grad or c.requires_grad or s.requires_grad):
            return torch.cat((rotated, x[..., r:]), -1)
        out = torch.empty_like(x)
        out[..., :r] = rotated
        out[..., r:] = x[..., r:]
        return out
    c, s, r = _prepare(x, cos, sin, layout, heads_dim)
    return _rotate_torch(x, c, s, r, layout)


def _rotate_torch(x: Tensor, c: Tensor, s: Tensor, r: int, layout: str) -> Tensor:
    """The torch path: ``x`` rotated by broadcastable tables ``c``/``s`` in ``x.dtype``."""
    if torch.is_grad_enabled() and (x.requires_grad or c.requires_grad or s.requires_grad):
        return _rotate_autograd(x, c, s, r, layout)
    out = torch.empty_like(x)
    if r < x.shape[-1]:
        out[..., r:] = x[..., r:]
    x1, x2 = _pairs(x, r, layout)
    o1, o2 = _pairs(out, r, layout)
    o1.copy_(x1 * c).sub_(x2 * s)
    o2.copy_(x2 * c).add_(x1 * s)
    return out


def _rotate_autograd(x: Tensor, c: Tensor, s: Tensor, r: int, layout: str) -> Tensor:
    """:func:`rotate` for training: out-of-place, so autograd can differentiate it (same arithmetic,
    so bitwise equal to the in-place path)."""
    x1, x2 = _pairs(x, r, layout)
    o1, o2 = x1 * c - x2 * s, x2 * c + x1 * s
    rotated = torch.cat((o1, o2), -1) if layout == "half" else torch.stack((o1, o2), -1).flatten(-2)
    return torch.cat((rotated, x[..., r:]), -1) if r < x.shape[-1] else rotated


def _rotate_(x: Tensor, c: Tensor, s: Tensor, r: int, layout: str) -> None:
    x1, x2 = _pairs(x, r, layout)
    x1_sin = x1 * s  # the only values of the old x1 still needed once x1 is overwritten
    x1.mul_(c).sub_(x2 * s)
    x2.mul_(c).add_(x1_sin)


def _rotate_inplace(
    x: Tensor, cos: Tensor, sin: Tensor, layout: str, heads_dim: int, kernel: str | None, upcast: bool
) -> None:
    """Rotate ``x`` in place with the resolved ``kernel`` backend (``None``: torch); inputs validated."""
    if kernel is not None:
        c, s = _kernel_tables(x, cos, sin, upcast)
        interleaved = layout == "interleaved"
        fused_rotate_(
            _heads_first(x, heads_dim), c, s, backend=kernel, interleaved=interleaved, upcast=upcast
        )
    elif _upcasts(x, upcast):
        c, s, r = _prepare(x, cos, sin, layout, heads_dim, torch.float32)
        x[..., :r] = _rotate_torch(x[..., :r].float(), c, s, r, layout)
    else:
        _rotate_(x, *_prepare(x, cos, sin, layout, heads_dim), layout)


def apply_rotary(
    q: Tensor,
    k: Tensor | None,
    cos: Tensor,
    sin: Tensor,
    *,
    layout: str = "half",
    heads_dim: int = 1,
    backend: str = "auto",
    upcast: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """Rotate queries and keys (RoFormer, arXiv:2104.09864); return new tensors ``(q', k')``.

    ``q``: ``[b, hq, s, d]`` (``heads_dim=1``) or ``[b, s, hq, d]`` (``heads_dim=2``); ``k`` the same
    with its own head count ``hk`` (GQA), or ``None`` (then ``k'`` is ``None``). ``cos``/``sin``: half
    tables ``[s, r/2]`` or ``[b, s, r/2]``. ``layout`` is ``"half"`` or ``"interleaved"``.
    ``backend``: ``"auto"`` (default), ``"torch"``, ``"cpp"``, ``"triton"``; ``upcast``: compute bf16/fp16
    in float32 (module docstring).
    """
    kwargs = {"layout": layout, "heads_dim": heads_dim, "backend": backend, "upcast": upcast}
    q_out = rotate(q, cos, sin, **kwargs)
    k_out = None if k is None else rotate(k, cos, sin, **kwargs)
    return q_out, k_out


def apply_rotary_(
    q: Tensor,
    k: Tensor | None,
    cos: Tensor,
    sin: Tensor,
    *,
    layout: str = "half",
    heads_dim: int = 1,
    backend: str = "auto",
    upcast: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """In-place :func:`apply_rotary`: overwrite the rotary channels of ``q`` and ``k``; return them.

    Bitwise equal to :func:`apply_rotary`. The torch path uses two temporaries of size ``[..., r/2]`` per
    tensor; the fused kernels none. ``q`` and ``k`` must not share memory.
    """
    # validate both, and pick their backends, before writing anything
    _validate(q, cos, sin, layout, heads_dim)
    q_kernel = _kernel_backend(backend, q, cos, sin, inplace=True)
    if k is not None:
        _validate(k, cos, sin, layout, heads_dim)
        k_kernel = _kernel_backend(backend, k, cos, sin, inplace=True)
    _rotate_inplace(q, cos, sin, layout, heads_dim, q_kernel, upcast)
    if k is not None:
        _rotate_inplace(k, cos, sin, layout, heads_dim, k_kernel, upcast)
    return q, k
