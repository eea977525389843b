"""The merged two-part path of ReRoPE / leaky ReRoPE / Self-Extend (ropelab.attention.merged).

Truth: the float64 direct references of ropelab.attention.reference (explicit relative-position matrices,
closed-form RoPE scores). Shapes cover the band only (L <= w), a KV-cache step (s_q = 1), chunks whose
first band block reaches before key 0 (0 < s_k - s_q < w), GQA, batched shifted positions, bfloat16.
"""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ropelab.attention import reference as ref
from ropelab.attention import rerope_attention, self_extend_attention
from ropelab.attention.merged import merged_attention_supported
from ropelab.rope import Rope

ROPE = Rope("yarn", head_dim=16, factor=4.0, original_max_position_embeddings=16)


def inputs(b, h, h_kv, s_q, s_k, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (
        torch.randn(b, n, s, 16, generator=g).to(dtype) for n, s in ((h, s_q), (h_kv, s_k), (h_kv, s_k))
    )
    k_pos = torch.arange(s_k) + 7 * torch.arange(b)[:, None]  # [b, s_k], rows shifted
    return q, k, v, k_pos[:, s_k - s_q :], k_pos


def methods(group, window):
    return {
        "rerope": (
            lambda *a: rerope_attention(*a, ROPE, window=window),
            lambda qp, kp: ref.rerope_relative(qp, kp, window),
        ),
        "leaky": (
            lambda *a: rerope_attention(*a, ROPE, window=window, leak=2.5),
            lambda qp, kp: ref.rerope_relative(qp, kp, window, 2.5),
        ),
        "self-extend": (
            lambda *a: self_extend_attention(*a, ROPE, group=group, window=window),
            lambda qp, kp: ref.self_extend_relative(qp, kp, group, window),
        ),
    }


SHAPES = [  # (s_k, s_q, window, group, h_kv)
    (5, 5, 8, 2, 2),  # L < w: band only
    (37, 37, 8, 4, 2),  # prefill, GQA
    (70, 70, 16, 3, 4),  # prefill, no GQA, last block partial
    (40, 40, 1, 2, 1),  # w = 1: every other key is far
    (37, 1, 8, 4, 2),  # KV-cache step
    (50, 7, 8, 3, 2),  # short chunk after a cache (band by masked windows)
    (70, 60, 16, 2, 2),  # chunk whose first band block reaches before key 0
    (70, 33, 16, 3, 1),  # chunk, far part with an unmasked prefix
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(("s_k", "s_q", "window", "group", "h_kv"), SHAPES)
def test_merged_equals_float64_reference(s_k, s_q, window, group, h_kv, dtype):
    q, k, v, qp, kp = inputs(2, 4, h_kv, s_q, s_k, dtype)
    assert merged_attention_supported(q, k, v, qp, kp)
    for name, (run, relative) in methods(group, window).items():
        out = run(q, k, v, qp, kp)
        assert out.dtype == dtype and out.shape == q.shape, name
        want = ref.rope_reference(q, k, v, qp, kp, ROPE, relative(qp, kp))
        torch.testing.assert_close(out.double(), want, atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize(("s_k", "s_q", "window", "group", "h_kv"), SHAPES[1:3] + SHAPES[4:5] + SHAPES[6:7])
def test_merged_bfloat16_within_the_blockwise_engines_error(s_k, s_q, window, group, h_kv):
    """bf16 inputs: the merged path is as close to the float64 truth as the blockwise engine (whose
    probabilities are rounded to bf16 before the product with v), within a small absolute margin."""
    q, k, v, qp, kp = inputs(2, 4, h_kv, s_q, s_k, torch.bfloat16, seed=3)
    for name, (run, relative) in methods(group, window).items():
        want = ref.rope_reference(q, k, v, qp, kp, ROPE, relative(qp, kp))
        merged = (run(q, k, v, qp, kp).double() - want).abs().max().item()
        assert merged <= 5e-2, name
        if name == "self-extend":
            engine = self_extend_attention(q, k, v, qp, kp, ROPE, group=group, window=window, block_size=8)
            assert merged <= (engine.double() - want).abs().max().item() + 1e-2


def test_fallbacks_arbitrary_positions_and_autograd_still_match():
    """Positions that are not one contiguous range, and inputs that need gradients, take the blockwise
    engine (the kernel's log-sum-exp carries no gradient); results and gradients match the reference."""
    q, k, v, qp, kp = inputs(1, 4, 2, 9, 9, torch.float64)
    gaps = kp * 2  # positions 0, 2, 4, ...
    assert not merged_attention_supported(q, k, v, gaps, gaps)
    want = ref.rope_reference(q, k, v, gaps, gaps, ROPE, ref.self_extend_relative(gaps, gaps, 2, 4))
    got = self_extend_attention(q, k, v, gaps, gaps, ROPE, group=2, window=4)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)  # float32 rotary tables
    q.requires_grad_()
    assert not merged_attention_supported(q, k, v, qp, kp)
    rel = ref.rerope_relative(qp, kp, 4)
    (grad,) = torch.autograd.grad(rerope_attention(q, k, v, qp, kp, ROPE, window=4).square().sum(), q)
    (want_grad,) = torch.autograd.grad(ref.rope_reference(q, k, v, qp, kp, ROPE, rel).square().sum(), q)
    torch.testing.assert_close(grad, want_grad, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        assert merged_attention_supported(q, k, v, qp, kp)


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("s_q", [512, 1])
def test_merged_path_never_builds_a_heads_by_length_squared_tensor(s_q):
    """No operator output of the merged path comes near h*L*L elements: the largest are the rotated /
    blocked copies of q, k, v and the float32 accumulator, O(h L hd)."""
    length, heads, window = 512, 4, 64
    q, k, v, qp, kp = inputs(1, heads, 2, s_q, length)
    with LargestTensor() as seen:
        out = self_extend_attention(q, k, v, qp, kp, ROPE, group=4, window=window)
        rerope_attention(q, k, v, qp, kp, ROPE, window=window)
    assert seen.largest <= 2 * heads * length * 16 < heads * length * length // 8
    want = self_extend_attention(q, k, v, qp, kp, ROPE, group=4, window=window, block_size=64)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
