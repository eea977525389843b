"""Tests for ropelab.attention: ALiBi, ReRoPE, leaky ReRoPE, Self-Extend, log-n and the blockwise engine.

Every method is checked against a slow direct reference that writes the relative positions into an
explicit [L, L] matrix and evaluates the scores from their closed form (no rotation involved).
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from ropelab.attention import (
    alibi_attention,
    alibi_slopes,
    log_n_scale,
    repeat_kv,
    rerope_attention,
    rope_attention,
    self_extend_attention,
)
from ropelab.attention import reference as ref
from ropelab.errors import RopeConfigError
from ropelab.rope import Rope, apply_rotary

PROPS = settings(max_examples=12, deadline=None)
L, W, G = 37, 8, 4


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def qkv(b=2, h=4, h_kv=2, s_q=L, s_k=L, hd=16, seed=0):
    return (
        randn(b, h, s_q, hd, seed=seed),
        randn(b, h_kv, s_k, hd, seed=seed + 1),
        randn(b, h_kv, s_k, hd, seed=seed + 2),
    )


ROPES = {
    "default": lambda hd: Rope("default", head_dim=hd),
    "yarn": lambda hd: Rope("yarn", head_dim=hd, factor=4.0, original_max_position_embeddings=16),
    "dynamic": lambda hd: Rope("dynamic", head_dim=hd, factor=2.0, original_max_position_embeddings=16),
    "partial": lambda hd: Rope("default", head_dim=hd, base=500.0, partial_rotary_factor=0.5),
}


# ------------------------------------------------------------------------------------------ slopes
def closed_form_slopes(n: int) -> list[float]:
    p = 2 ** math.floor(math.log2(n))
    first = [2 ** (-8 * h / p) for h in range(1, p + 1)]
    every_second_of_2p = [2 ** (-8 * h / (2 * p)) for h in range(1, 2 * p + 1)][0::2]  # h = 1, 3, 5, ...
    return first + every_second_of_2p[: n - p]


@pytest.mark.parametrize("n", range(1, 65))
def test_alibi_slopes_closed_form(n):
    slopes = alibi_slopes(n)
    assert slopes.dtype == torch.float32 and slopes.shape == (n,)
    assert torch.equal(slopes, torch.tensor(closed_form_slopes(n), dtype=torch.float64).float())


def test_alibi_slopes_brief_examples():
    expected_12 = [2.0**-e for e in (1, 2, 3, 4, 5, 6, 7, 8, 0.5, 1.5, 2.5, 3.5)]
    assert alibi_slopes(12).tolist() == pytest.approx(expected_12, rel=1e-7)
    assert alibi_slopes(8).tolist() == pytest.approx([2.0**-h for h in range(1, 9)], rel=1e-7)
    ratios = alibi_slopes(16)[1:] / alibi_slopes(16)[:-1]  # geometric for powers of two
    assert torch.allclose(ratios, torch.full_like(ratios, 2**-0.5))


@pytest.mark.parametrize("bad", [0, -3, 2.0, True, "8"])
def test_alibi_slopes_rejects_bad_head_counts(bad):
    with pytest.raises(RopeConfigError, match="n_heads"):
        alibi_slopes(bad)


# ------------------------------------------------------------------------------------------- ALiBi
def alibi_direct(q, k, v, qp, kp, slopes):
    """Scores from an explicit bias[h, i, j] = -m_h * (pos_i - pos_j), float64."""
    h, hd = q.shape[1], q.shape[-1]
    scores = q.double() @ repeat_kv(k, h).double().transpose(-1, -2) / math.sqrt(hd)
    rel = ref.relative_positions(qp, kp)  # [b|1, s_q, s_k]
    scores = scores - slopes.double()[None, :, None, None] * rel[:, None]
    return ref.reference_attention(scores, v, qp, kp)


@pytest.mark.parametrize("block_size", [1, 5, L, 64, None])
def test_alibi_matches_direct_reference_and_sdpa_with_bias(block_size):
    q, k, v = qkv()
    pos = torch.arange(L)
    slopes = alibi_slopes(4)
    out = alibi_attention(q, k, v, pos, pos, block_size=block_size)
    torch.testing.assert_close(out.double(), alibi_direct(q, k, v, pos, pos, slopes), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        out, ref.alibi_attention_materialised(q, k, v, pos, pos, slopes), atol=1e-5, rtol=0
    )


def test_alibi_block_sizes_agree_and_batched_positions():
    q, k, v = qkv(b=3)
    pos = torch.arange(L)[None] + torch.tensor([[0], [5], [100]])  # [b, s]: different offsets per row
    outs = [alibi_attention(q, k, v, pos, pos, block_size=bs) for bs in (3, 7, L, 100)]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=2e-6, rtol=0)
    torch.testing.assert_close(
        outs[0].double(), alibi_direct(q, k, v, pos, pos, alibi_slopes(4)), atol=1e-5, rtol=0
    )
    # ALiBi depends only on distances: every row equals the unshifted computation
    torch.testing.assert_close(outs[0], alibi_attention(q, k, v, pos[0], pos[0]), atol=1e-5, rtol=0)


def test_alibi_custom_slopes_scale_and_errors():
    q, k, v = qkv()
    pos = torch.arange(L)
    slopes = torch.tensor([0.0, 0.1, 1.0, 3.0])
    out = alibi_attention(q, k, v, pos, pos, slopes, scale=0.3, block_size=10)
    expected = ref.alibi_attention_materialised(q, k, v, pos, pos, slopes, scale=0.3)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    with pytest.raises(RopeConfigError, match="slopes"):
        alibi_attention(q, k, v, pos, pos, torch.ones(3))
    with pytest.raises(RopeConfigError, match="block_size"):
        alibi_attention(q, k, v, pos, pos, block_size=0)
    with pytest.raises(RopeConfigError, match="multiple"):
        alibi_attention(q, randn(2, 3, L, 16), randn(2, 3, L, 16), pos, pos)


def test_alibi_gradients_match_materialised():
    q, k, v = (t.requires_grad_() for t in qkv(s_q=20, s_k=20))
    pos = torch.arange(20)
    grads = torch.autograd.grad(alibi_attention(q, k, v, pos, pos, block_size=6).square().sum(), (q, k, v))
    slopes = alibi_slopes(4)
    expected = torch.autograd.grad(
        ref.alibi_attention_materialised(q, k, v, pos, pos, slopes).square().sum(), (q, k, v)
    )
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------- relative position matrices
def test_relative_matrices_follow_the_formulas():
    pos = torch.arange(30)
    rr, leaky, se = (
        ref.rerope_relative(pos, pos, W),
        ref.rerope_relative(pos, pos, W, 4.0),
        ref.self_extend_relative(pos, pos, G, W),
    )
    for i in range(30):
        for j in range(i + 1):
            d = i - j
            assert rr[0, i, j] == min(d, W)
            assert leaky[0, i, j] == (d if d < W else W + (d - W) / 4.0)
            assert se[0, i, j] == (d if d < W else i // G - j // G + W - W // G)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("rope_name", list(ROPES))
def test_reference_scores_equal_rotate_then_dot(layout, rope_name):
    """The closed-form reference itself: with rel = i - j it is RoPE (rotate q and k, then dot)."""
    rope = ROPES[rope_name](16)
    q, k, _ = qkv(b=1, h=2, h_kv=2, s_q=12, s_k=12)
    pos = torch.arange(12)
    cos, sin = rope.cos_sin(pos)
    qr, kr = apply_rotary(q.double(), k.double(), cos.double(), sin.double(), layout=layout)
    inv_freq, scaling = rope.frequencies(12)
    scores = ref.rotary_scores(
        q, k, ref.relative_positions(pos, pos), inv_freq, scaling=scaling, layout=layout
    )
    torch.testing.assert_close(scores, qr @ kr.transpose(-1, -2), atol=1e-5, rtol=1e-6)


# --------------------------------------------------------------------- ReRoPE, leaky, Self-Extend
def run_method(name, q, k, v, qp, kp, rope, **kw):
    if name == "rope":
        return rope_attention(q, k, v, qp, kp, rope, **kw)
    if name == "rerope":
        return rerope_attention(q, k, v, qp, kp, rope, window=W, **kw)
    if name == "leaky":
        return rerope_attention(q, k, v, qp, kp, rope, window=W, leak=3.0, **kw)
    return self_extend_attention(q, k, v, qp, kp, rope, group=G, window=W, **kw)


def relative_for(name, qp, kp):
    if name == "rope":
        return ref.relative_positions(qp, kp)
    if name == "rerope":
        return ref.rerope_relative(qp, kp, W)
    if name == "leaky":
        return ref.rerope_relative(qp, kp, W, 3.0)
    return ref.self_extend_relative(qp, kp, G, W)


METHODS = ["rope", "rerope", "leaky", "self-extend"]


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("rope_name", list(ROPES))
@pytest.mark.parametrize("method", METHODS)
def test_methods_match_direct_reference(method, rope_name, layout):
    rope = ROPES[rope_name](16)
    q, k, v = qkv()  # 4 query heads, 2 KV heads (GQA)
    pos = torch.arange(L)
    kw = {} if method == "rope" else {"block_size": 10}
    out = run_method(method, q, k, v, pos, pos, rope, layout=layout, **kw)
    expected = ref.rope_reference(q, k, v, pos, pos, rope, relative_for(method, pos, pos), layout=layout)
    assert out.shape == q.shape
    torch.testing.assert_close(out.double(), expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_kv_cache_rows_equal_full_call(method):
    """q_positions = the last few positions, k_positions = all: the rows of the full call."""
    rope = ROPES["dynamic"](16)  # length-dependent frequencies: both calls see max position + 1
    q, k, v = qkv()
    pos = torch.arange(L)
    full = run_method(method, q, k, v, pos, pos, rope)
    last = run_method(method, q[:, :, -5:], k, v, pos[-5:], pos, rope)
    torch.testing.assert_close(last, full[:, :, -5:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", METHODS)
def test_batched_positions_equal_per_row_calls(method):
    rope = ROPES["yarn"](16)
    q, k, v = qkv(b=2)
    pos = torch.stack((torch.arange(L), torch.arange(L) + 11))  # [b, s], e.g. a shifted second row
    out = run_method(method, q, k, v, pos, pos, rope)
    for row in range(2):
        one = run_method(
            method, q[row : row + 1], k[row : row + 1], v[row : row + 1], pos[row], pos[row], rope
        )
        torch.testing.assert_close(out[row : row + 1], one, atol=1e-5, rtol=0)


@pytest.mark.parametrize("block_size", [1, 6, L, 50])
def test_rerope_window_beyond_length_is_plain_rope(block_size):
    rope = ROPES["yarn"](16)
    q, k, v = qkv()
    pos = torch.arange(L)
    plain = rope_attention(q, k, v, pos, pos, rope)
    for window in (L, L + 100):
        got = rerope_attention(q, k, v, pos, pos, rope, window=window, block_size=block_size)
        torch.testing.assert_close(got, plain, atol=1e-5, rtol=0)


def test_self_extend_group_one_is_plain_rope():
    rope = ROPES["default"](16)
    q, k, v = qkv()
    pos = torch.arange(L)
    plain = rope_attention(q, k, v, pos, pos, rope)
    for window in (1, 4, W):
        got = self_extend_attention(q, k, v, pos, pos, rope, group=1, window=window, block_size=9)
        torch.testing.assert_close(got, plain, atol=1e-5, rtol=0)


def test_leaky_rerope_with_huge_leak_is_rerope():
    rope = ROPES["default"](16)
    q, k, v = qkv()
    pos = torch.arange(L)
    rerope = rerope_attention(q, k, v, pos, pos, rope, window=W)
    leaky = rerope_attention(q, k, v, pos, pos, rope, window=W, leak=1e9)
    torch.testing.assert_close(leaky, rerope, atol=1e-5, rtol=0)
    plain = rope_attention(q, k, v, pos, pos, rope)
    torch.testing.assert_close(
        rerope_attention(q, k, v, pos, pos, rope, window=W, leak=1.0), plain, atol=1e-5, rtol=0
    )


@PROPS
@given(
    length=st.integers(1, 24),
    window=st.integers(1, 30),
    group=st.integers(1, 6),
    block=st.integers(1, 30),
    offset=st.integers(0, 1000),
)
def test_property_rerope_and_self_extend_match_reference(length, window, group, block, offset):
    rope = ROPES["default"](8)
    q, k, v = qkv(b=1, h=2, h_kv=1, s_q=length, s_k=length, hd=8, seed=length)
    pos = torch.arange(length) + offset
    got = rerope_attention(q, k, v, pos, pos, rope, window=window, block_size=block)
    want = ref.rope_reference(q, k, v, pos, pos, rope, ref.rerope_relative(pos, pos, window))
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    got = self_extend_attention(q, k, v, pos, pos, rope, group=group, window=window, block_size=block)
    want = ref.rope_reference(q, k, v, pos, pos, rope, ref.self_extend_relative(pos, pos, group, window))
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)


def test_method_option_errors():
    rope = ROPES["default"](16)
    q, k, v = qkv()
    pos = torch.arange(L)
    with pytest.raises(RopeConfigError, match="window"):
        rerope_attention(q, k, v, pos, pos, rope, window=0)
    with pytest.raises(RopeConfigError, match="leak"):
        rerope_attention(q, k, v, pos, pos, rope, window=4, leak=0.5)
    with pytest.raises(RopeConfigError, match="group"):
        self_extend_attention(q, k, v, pos, pos, rope, group=0, window=4)
    with pytest.raises(RopeConfigError, match="window"):
        self_extend_attention(q, k, v, pos, pos, rope, group=2, window=2.5)
    with pytest.raises(RopeConfigError, match="q_positions"):
        rope_attention(q, k, v, pos[:-1], pos, rope)


# -------------------------------------------------------------------------------------------- log-n
def test_log_n_scale_values():
    assert log_n_scale(torch.arange(16), 16).tolist() == [1.0] * 16
    assert log_n_scale(torch.tensor([31, 255]), 16).tolist() == pytest.approx([1.25, 2.0])


@pytest.mark.parametrize("method", METHODS)
def test_log_n_unchanged_below_trained_length_and_scales_q_beyond(method):
    trained = 16
    rope = Rope("default", head_dim=16, original_max_position_embeddings=trained)
    q, k, v = qkv()
    pos = torch.arange(L)
    short = pos[:trained]
    torch.testing.assert_close(
        run_method(
            method, q[:, :, :trained], k[:, :, :trained], v[:, :, :trained], short, short, rope, log_n=True
        ),
        run_method(method, q[:, :, :trained], k[:, :, :trained], v[:, :, :trained], short, short, rope),
        atol=0,
        rtol=0,
    )
    factors = torch.tensor([max(1.0, math.log(n + 1) / math.log(trained)) for n in range(L)])
    with_log_n = run_method(method, q, k, v, pos, pos, rope, log_n=True)
    scaled_q = run_method(method, q * factors[:, None], k, v, pos, pos, rope)
    torch.testing.assert_close(with_log_n, scaled_q, atol=1e-5, rtol=0)
    # the Rope's own log_n flag is the default
    rope_log_n = Rope("default", head_dim=16, original_max_position_embeddings=trained, log_n=True)
    torch.testing.assert_close(
        run_method(method, q, k, v, pos, pos, rope_log_n), with_log_n, atol=1e-6, rtol=0
    )
    expected = ref.rope_reference(
        q, k, v, pos, pos, rope, relative_for(method, pos, pos), q_factors=factors[None, None, :, None]
    )
    torch.testing.assert_close(with_log_n.double(), expected, atol=1e-5, rtol=0)


def test_log_n_needs_trained_length():
    q, k, v = qkv()
    pos = torch.arange(L)
    with pytest.raises(RopeConfigError, match="original_max_position_embeddings"):
        rope_attention(q, k, v, pos, pos, Rope("default", head_dim=16), log_n=True)


# ----------------------------------------------------------------------------------- memory (structure)
class LargestTensor(TorchDispatchMode):
    """Records the largest number of elements of any tensor an operator produces."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("method", ["alibi", "rerope", "leaky", "self-extend"])
def test_blockwise_never_builds_a_heads_by_length_squared_tensor(method):
    """Structural check of the memory claim: no operator output has h*L*L elements in the blockwise path,
    while the materialised path (one block) does. The largest block tensor is [b, h, B, L]."""
    length, heads, block = 512, 4, 32
    q, k, v = qkv(b=1, h=heads, h_kv=2, s_q=length, s_k=length, hd=16)
    pos = torch.arange(length)
    rope = ROPES["default"](16)

    def call(block_size):
        if method == "alibi":
            return alibi_attention(q, k, v, pos, pos, block_size=block_size)
        return run_method(method, q, k, v, pos, pos, rope, block_size=block_size)

    with LargestTensor() as blockwise:
        out = call(block)
    with LargestTensor() as materialised:
        full = call(length)
    assert blockwise.largest <= heads * block * length < heads * length * length
    assert materialised.largest >= heads * length * length
    torch.testing.assert_close(out, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", ["rerope", "leaky", "self-extend"])
def test_rotary_method_gradients_match_reference(method):
    rope = ROPES["yarn"](16)
    q, k, v = (t.double().requires_grad_() for t in qkv(s_q=20, s_k=20))
    pos = torch.arange(20)
    got = torch.autograd.grad(
        run_method(method, q, k, v, pos, pos, rope, block_size=6).square().sum(), (q, k, v)
    )
    want = ref.rope_reference(q, k, v, pos, pos, rope, relative_for(method, pos, pos))
    for g, w in zip(got, torch.autograd.grad(want.square().sum(), (q, k, v)), strict=True):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block_size", [None, 2, 10])
def test_queries_without_visible_keys_get_zero_rows(block_size):
    """Queries before every key (possible with arbitrary positions) see nothing: output 0, never NaN."""
    q, k, v = qkv(s_q=5, s_k=8)
    q_pos, k_pos = torch.arange(5), torch.arange(3, 11)
    out = alibi_attention(q, k, v, q_pos, k_pos, block_size=block_size)
    assert torch.equal(out[:, :, :3], torch.zeros_like(out[:, :, :3]))
    expected = alibi_direct(q[:, :, 3:], k, v, q_pos[3:], k_pos, alibi_slopes(4))
    torch.testing.assert_close(out[:, :, 3:].double(), expected, atol=1e-5, rtol=0)
    rerope = rerope_attention(q, k, v, q_pos, k_pos, ROPES["default"](16), window=2, block_size=block_size)
    assert torch.equal(rerope[:, :, :3], torch.zeros_like(rerope[:, :, :3])) and torch.isfinite(rerope).all()
