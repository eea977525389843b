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
"""

from __future__ import annotations

import torch
from torch import Tensor

from ropelab.errors import RopeConfigError

__all__ = ["apply_rotary", "apply_rotary_", "rotate"]

_LAYOUTS = ("half", "interleaved")


def _prepare(x: Tensor, cos: Tensor, sin: Tensor, layout: str, heads_dim: int) -> tuple[Tensor, Tensor, int]:
    """Validate the inputs; return cos/sin in ``x.dtype`` broadcastable to ``x[..., :r/2]`` and ``r``."""
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
    if cos.ndim == 2:
        cos, sin = cos.unsqueeze(0), sin.unsqueeze(0)
    # [b, s, r/2] -> [b, 1, s, r/2] (heads_dim=1) or [b, s, 1, r/2] (heads_dim=2)
    cos, sin = cos.unsqueeze(heads_dim), sin.unsqueeze(heads_dim)
    return cos.to(x.dtype), sin.to(x.dtype), r


def _pairs(x: Tensor, r: int, layout: str) -> tuple[Tensor, Tensor]:
    """Views ``(first, second)`` of the pair members of ``x``, each ``[..., r/2]``."""
    if layout == "half":
        return x[..., : r // 2], x[..., r // 2 : r]
    return x[..., 0:r:2], x[..., 1:r:2]


def rotate(x: Tensor, cos: Tensor, sin: Tensor, *, layout: str = "half", heads_dim: int = 1) -> Tensor:
    """Return ``x`` (``[b, h, s, d]`` or ``[b, s, h, d]``) rotated by the half tables ``cos``/``sin``.

    ``cos``/``sin``: ``[s, r/2]`` or ``[b, s, r/2]``. Output has the shape and dtype of ``x``; channels
    ``r..d`` are copied unchanged. Raises ``RopeConfigError`` (a ``ValueError``) on inconsistent
    shapes or an unknown layout.
    """
    c, s, r = _prepare(x, cos, sin, layout, heads_dim)
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


def apply_rotary(
    q: Tensor,
    k: Tensor | None,
    cos: Tensor,
    sin: Tensor,
    *,
    layout: str = "half",
    heads_dim: int = 1,
) -> tuple[Tensor, Tensor | None]:
    """Rotate queries and keys (RoFormer, arXiv:2104.09864); return new tensors ``(q', k')``.

    ``q``: ``[b, hq, s, d]`` (``heads_dim=1``) or ``[b, s, hq, d]`` (``heads_dim=2``); ``k`` the same
    with its own head count ``hk`` (GQA), or ``None`` (then ``k'`` is ``None``). ``cos``/``sin``: half
    tables ``[s, r/2]`` or ``[b, s, r/2]``. ``layout`` is ``"half"`` or ``"interleaved"``.
    """
    q_out = rotate(q, cos, sin, layout=layout, heads_dim=heads_dim)
    k_out = None if k is None else rotate(k, cos, sin, layout=layout, heads_dim=heads_dim)
    return q_out, k_out


def apply_rotary_(
    q: Tensor,
    k: Tensor | None,
    cos: Tensor,
    sin: Tensor,
    *,
    layout: str = "half",
    heads_dim: int = 1,
) -> tuple[Tensor, Tensor | None]:
    """In-place :func:`apply_rotary`: overwrite the rotary channels of ``q`` and ``k``; return them.

    Bitwise equal to :func:`apply_rotary`. Uses two temporaries of size ``[..., r/2]`` per tensor.
    ``q`` and ``k`` must not share memory.
    """
    q_tables = _prepare(q, cos, sin, layout, heads_dim)
    k_tables = None if k is None else _prepare(k, cos, sin, layout, heads_dim)  # validate before writing
    _rotate_(q, *q_tables, layout)
    if k is not None and k_tables is not None:
        _rotate_(k, *k_tables, layout)
    return q, k
