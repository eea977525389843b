"""Tests for ropelab.rope.apply: parity with transformers, RoPE's algebraic properties, edge cases."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb as neox_apply_rotary_pos_emb
from transformers.models.gptj.modeling_gptj import apply_rotary_pos_emb as gptj_apply_rotary_pos_emb
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb as llama_apply_rotary_pos_emb

from ropelab.rope.apply import apply_rotary, apply_rotary_, rotate

LAYOUTS = ("half", "interleaved")
PROPS = settings(max_examples=30, deadline=None)


def tables(positions, r: int, base: float = 10000.0, dtype=torch.float32):
    """Half tables cos, sin of shape [*positions.shape, r/2]; angles computed in float64."""
    positions = torch.as_tensor(positions)
    inv_freq = 1.0 / (base ** (torch.arange(0, r, 2, dtype=torch.float64) / r))
    angles = positions[..., None].double() * inv_freq
    return angles.cos().to(dtype), angles.sin().to(dtype)


def randn(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float32).to(dtype)


def full_width(t, b):
    """[s, r/2] half table -> transformers' [b, s, r] full-width table."""
    return torch.cat((t, t), dim=-1).expand(b, *t.shape[:-1], 2 * t.shape[-1])


def half_perm(r: int, d: int) -> torch.Tensor:
    """Index map with x_half = x_interleaved[..., idx]: interleaved 2i -> half i, 2i+1 -> half i + r/2."""
    return torch.cat((torch.arange(0, r, 2), torch.arange(1, r, 2), torch.arange(r, d)))


# --- parity with transformers ------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("heads_dim", [1, 2])
def test_half_matches_transformers_llama(dtype, heads_dim):
    b, s, d = 2, 33, 64
    cos, sin = tables(torch.arange(1000, 1000 + s), d)
    q = randn(b, 8, s, d, dtype=dtype, seed=1)
    k = randn(b, 2, s, d, dtype=dtype, seed=2)
    if heads_dim == 2:
        q, k = q.transpose(1, 2), k.transpose(1, 2)
    C, S = full_width(cos, b).to(dtype), full_width(sin, b).to(dtype)  # HF hands cos/sin in model dtype
    ref_q, ref_k = llama_apply_rotary_pos_emb(q, k, C, S, unsqueeze_dim=heads_dim)
    out_q, out_k = apply_rotary(q, k, cos, sin, heads_dim=heads_dim)
    assert out_q.dtype == dtype and out_k.dtype == dtype
    assert out_q.shape == q.shape and out_k.shape == k.shape
    # Same operations in the same order and dtype: identical, not just close, in every dtype.
    torch.testing.assert_close(out_q, ref_q, rtol=0, atol=0)
    torch.testing.assert_close(out_k, ref_k, rtol=0, atol=0)


@pytest.mark.parametrize("r", [16, 32, 62])
def test_partial_rotary_matches_transformers_gpt_neox(r):
    b, h, s, d = 2, 4, 17, 64
    cos, sin = tables(torch.arange(s), r)
    q, k = randn(b, h, s, d, seed=3), randn(b, h, s, d, seed=4)
    ref_q, ref_k = neox_apply_rotary_pos_emb(q, k, full_width(cos, b), full_width(sin, b))
    out_q, out_k = apply_rotary(q, k, cos, sin)
    torch.testing.assert_close(out_q, ref_q, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_k, ref_k, rtol=0, atol=1e-6)


@pytest.mark.parametrize("r", [64, 24])
def test_interleaved_matches_transformers_gptj(r):
    # GPT-J rotates the first r channels of [b, s, h, d] pairwise (x_2i, x_2i+1), passes the rest.
    b, s, h, d = 2, 19, 4, 64
    pos = torch.stack((torch.arange(s), torch.arange(s) + 7))  # [b, s]
    cos, sin = tables(pos, r)
    x = randn(b, s, h, d, seed=5)
    ref = torch.cat((gptj_apply_rotary_pos_emb(x[..., :r], sin, cos), x[..., r:]), dim=-1)
    out = rotate(x, cos, sin, layout="interleaved", heads_dim=2)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


# --- algebraic properties ----------------------------------------------------------------------


@PROPS
@given(
    m=st.integers(0, 8192),
    n=st.integers(0, 8192),
    shift=st.integers(-4096, 4096),
    layout=st.sampled_from(LAYOUTS),
    half_r=st.integers(1, 32),
    seed=st.integers(0, 2**16),
)
def test_score_depends_only_on_relative_position(m, n, shift, layout, half_r, seed):
    r, d = 2 * half_r, 2 * half_r + 4
    m2, n2 = m + shift, n + shift
    q = randn(1, 1, 1, d, dtype=torch.float64, seed=seed)
    k = randn(1, 1, 1, d, dtype=torch.float64, seed=seed + 1)

    def score(i, j):
        cq, sq = tables(torch.tensor([i]), r, dtype=torch.float64)
        ck, sk = tables(torch.tensor([j]), r, dtype=torch.float64)
        return (rotate(q, cq, sq, layout=layout) * rotate(k, ck, sk, layout=layout)).sum()

    torch.testing.assert_close(score(m, n), score(m2, n2), rtol=1e-9, atol=1e-9)


@PROPS
@given(
    start=st.integers(-10_000, 100_000),
    layout=st.sampled_from(LAYOUTS),
    half_r=st.integers(1, 32),
    extra=st.integers(0, 8),
    heads_dim=st.sampled_from([1, 2]),
)
def test_rotation_preserves_norms(start, layout, half_r, extra, heads_dim):
    r, s = 2 * half_r, 5
    cos, sin = tables(torch.arange(start, start + s), r)
    x = randn(2, s, 3, r + extra, seed=start % 997)
    if heads_dim == 1:
        x = x.transpose(1, 2)
    out = rotate(x, cos, sin, layout=layout, heads_dim=heads_dim)
    torch.testing.assert_close(out.norm(dim=-1), x.norm(dim=-1), rtol=1e-5, atol=1e-6)


@PROPS
@given(start=st.integers(0, 100_000), layout=st.sampled_from(LAYOUTS), half_r=st.integers(1, 32))
def test_rotating_back_undoes_rotation(start, layout, half_r):
    r, d = 2 * half_r, 2 * half_r + 2
    cos, sin = tables(torch.arange(start, start + 7), r)
    x = randn(2, 3, 7, d, seed=start % 991)
    y = rotate(x, cos, sin, layout=layout)
    back = rotate(y, cos, -sin, layout=layout)  # R(-a): cos(-a) = cos a, sin(-a) = -sin a
    torch.testing.assert_close(back, x, rtol=0, atol=1e-5)


@PROPS
@given(half_r=st.integers(1, 32), extra=st.integers(0, 6), start=st.integers(0, 50_000))
def test_interleaved_is_half_on_permuted_channels(half_r, extra, start):
    r, d = 2 * half_r, 2 * half_r + extra
    cos, sin = tables(torch.arange(start, start + 6), r)
    x = randn(2, 3, 6, d, seed=start % 983)
    idx = half_perm(r, d)
    inter = rotate(x, cos, sin, layout="interleaved")
    half = rotate(x[..., idx], cos, sin, layout="half")
    assert torch.equal(inter[..., idx], half)


def test_half_perm_is_a_permutation():
    idx = half_perm(8, 10)
    assert idx.tolist() == [0, 2, 4, 6, 1, 3, 5, 7, 8, 9]


# --- partial rotary, GQA, layouts of q/k --------------------------------------------------------


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view({4: torch.int32, 2: torch.int16}[t.element_size()])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("inplace", [False, True])
def test_partial_rotary_pass_through_is_bit_identical(dtype, layout, inplace):
    b, h, s, d, r = 2, 3, 9, 40, 24
    cos, sin = tables(torch.arange(s), r)
    x = randn(b, h, s, d, dtype=dtype, seed=6)
    specials = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0, 0.0], dtype=dtype)
    x[..., r : r + 5] = specials  # NaN/inf/-0.0 must survive unchanged, bit for bit
    before = x.clone()
    out = (
        apply_rotary_(x, None, cos, sin, layout=layout)[0] if inplace else rotate(x, cos, sin, layout=layout)
    )
    assert torch.equal(_bits(out[..., r:]), _bits(before[..., r:]))
    assert not torch.equal(out[..., :r], before[..., :r])


@pytest.mark.parametrize("layout", LAYOUTS)
def test_gqa_and_both_head_layouts(layout):
    b, s, d, r = 2, 11, 32, 24
    cos, sin = tables(torch.arange(3, 3 + s), r)
    k = randn(b, 2, s, d, seed=7)
    q = k.repeat_interleave(4, dim=1) + 0.0  # 8 query heads; head j of q equals head j // 4 of k
    q[:, 1::4] = randn(b, 2, s, d, seed=8)  # ...except some, which must not leak into k
    out_q, out_k = apply_rotary(q, k, cos, sin, layout=layout)
    assert out_q.shape == (b, 8, s, d) and out_k.shape == (b, 2, s, d)
    assert torch.equal(out_q[:, 0::4], out_k)
    assert torch.equal(out_q[:, 1::4], rotate(q[:, 1::4].contiguous(), cos, sin, layout=layout))

    # [b, s, h, d], both as a non-contiguous view and as a contiguous tensor
    for qt, kt in (
        (q.transpose(1, 2), k.transpose(1, 2)),
        (q.transpose(1, 2).contiguous(), k.transpose(1, 2)),
    ):
        tq, tk = apply_rotary(qt, kt, cos, sin, layout=layout, heads_dim=2)
        assert torch.equal(tq.transpose(1, 2), out_q)
        assert torch.equal(tk.transpose(1, 2), out_k)


def test_k_none():
    cos, sin = tables(torch.arange(4), 8)
    q = randn(1, 2, 4, 8)
    out_q, out_k = apply_rotary(q, None, cos, sin)
    assert out_k is None and torch.equal(out_q, rotate(q, cos, sin))
    q2 = q.clone()
    res_q, res_k = apply_rotary_(q2, None, cos, sin)
    assert res_k is None and res_q is q2 and torch.equal(q2, out_q)


# --- dtypes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_low_precision_close_to_fp32(dtype, tol, layout):
    b, h, s, d = 2, 4, 64, 64
    cos, sin = tables(torch.arange(4000, 4000 + s), d)  # large angles: tables rounded to dtype
    x = randn(b, h, s, d, dtype=dtype, seed=9)
    out = rotate(x, cos, sin, layout=layout)
    assert out.dtype == dtype
    ref = rotate(x.float(), cos, sin, layout=layout)  # same (already rounded) input, fp32 math
    torch.testing.assert_close(out.float(), ref, rtol=tol, atol=tol)


def test_fp64_input_with_fp32_tables_keeps_fp64():
    cos, sin = tables(torch.arange(5), 16)
    x = randn(1, 2, 5, 16, dtype=torch.float64)
    assert rotate(x, cos, sin).dtype == torch.float64


# --- positions: KV-cache offset and per-batch position ids --------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("heads_dim", [1, 2])
def test_offset_positions_match_rows_of_long_sequence(layout, heads_dim):
    h, d, r = 3, 48, 32
    x = randn(1, h, 110, d, seed=10)
    if heads_dim == 2:
        x = x.transpose(1, 2)
    seq = slice(100, 110)
    rows = (slice(None), slice(None), seq) if heads_dim == 1 else (slice(None), seq)
    full = rotate(x, *tables(torch.arange(110), r), layout=layout, heads_dim=heads_dim)
    tail = rotate(x[rows], *tables(torch.arange(100, 110), r), layout=layout, heads_dim=heads_dim)
    assert torch.equal(tail, full[rows])


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("heads_dim", [1, 2])
def test_per_batch_position_ids(layout, heads_dim):
    b, h, s, d, r = 3, 2, 8, 20, 16
    pos = torch.stack((torch.arange(s), torch.arange(s) + 100, torch.tensor([0, 0, 0, 1, 2, 3, 4, 5])))
    cos, sin = tables(pos, r)  # [b, s, r/2]
    q, k = randn(b, 4, s, d, seed=11), randn(b, h, s, d, seed=12)
    if heads_dim == 2:
        q, k = q.transpose(1, 2), k.transpose(1, 2)
    out_q, out_k = apply_rotary(q, k, cos, sin, layout=layout, heads_dim=heads_dim)
    for i in range(b):
        ref_q, ref_k = apply_rotary(
            q[i : i + 1], k[i : i + 1], cos[i], sin[i], layout=layout, heads_dim=heads_dim
        )
        assert torch.equal(out_q[i : i + 1], ref_q)
        assert torch.equal(out_k[i : i + 1], ref_k)


def test_batch_one_table_broadcasts():
    cos, sin = tables(torch.arange(6), 8)
    x = randn(3, 2, 6, 8)
    assert torch.equal(rotate(x, cos[None], sin[None]), rotate(x, cos, sin))


# --- in-place variant --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("heads_dim", [1, 2])
def test_inplace_equals_out_of_place(dtype, layout, heads_dim):
    b, s, d, r = 2, 10, 40, 32
    cos, sin = tables(torch.arange(50, 50 + s), r)
    q, k = randn(b, 8, s, d, dtype=dtype, seed=13), randn(b, 2, s, d, dtype=dtype, seed=14)
    if heads_dim == 2:
        q, k = q.transpose(1, 2).contiguous(), k.transpose(1, 2).contiguous()
    ref_q, ref_k = apply_rotary(q, k, cos, sin, layout=layout, heads_dim=heads_dim)
    q_ptr, k_ptr = q.data_ptr(), k.data_ptr()
    out_q, out_k = apply_rotary_(q, k, cos, sin, layout=layout, heads_dim=heads_dim)
    assert out_q is q and out_k is k
    assert out_q.data_ptr() == q_ptr and out_k.data_ptr() == k_ptr
    assert torch.equal(q, ref_q) and torch.equal(k, ref_k)


def test_inplace_on_a_view_writes_through():
    # q and k as views into one fused [b, s, h_q + h_k, d] projection, as attention code often has
    b, s, d = 2, 7, 16
    cos, sin = tables(torch.arange(s), d)
    fused = randn(b, s, 6, d, seed=15)
    q_ref, k_ref = apply_rotary(fused[:, :, :4], fused[:, :, 4:], cos, sin, heads_dim=2)
    apply_rotary_(fused[:, :, :4], fused[:, :, 4:], cos, sin, heads_dim=2)
    assert torch.equal(fused[:, :, :4], q_ref) and torch.equal(fused[:, :, 4:], k_ref)


def test_inplace_validates_k_before_writing_q():
    cos, sin = tables(torch.arange(5), 8)
    q, k = randn(1, 2, 5, 8), randn(1, 2, 5, 6)  # k too narrow for r = 8
    before = q.clone()
    with pytest.raises(ValueError, match="exceeds head dim"):
        apply_rotary_(q, k, cos, sin)
    assert torch.equal(q, before)


# --- autograd ----------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("heads_dim", [1, 2])
def test_gradcheck(layout, heads_dim):
    cos, sin = tables(torch.arange(3, 8), 6, dtype=torch.float64)
    x = randn(2, 5, 5, 8, dtype=torch.float64, seed=16).requires_grad_()
    torch.autograd.gradcheck(lambda t: rotate(t, cos, sin, layout=layout, heads_dim=heads_dim), (x,))
    torch.autograd.gradcheck(
        lambda t: apply_rotary_(t.clone(), None, cos, sin, layout=layout, heads_dim=heads_dim)[0], (x,)
    )


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x_shape", "cos_shape", "sin_shape", "kwargs", "match"),
    [
        ((1, 2, 5, 8), (5, 6), (5, 6), {}, r"rotary dim 12 .* exceeds head dim 8"),
        ((1, 2, 5, 8), (4, 4), (4, 4), {}, r"cover 4 positions .* sequence length 5"),
        ((1, 5, 2, 8), (2, 4), (2, 4), {"heads_dim": 2}, r"cover 2 positions .* sequence length 5"),
        (
            (1, 2, 5, 8),
            (5, 4),
            (5, 4),
            {"layout": "neox"},
            r"unknown rotary layout 'neox'.*half, interleaved",
        ),
        ((1, 2, 5, 8), (5, 4), (5, 3), {}, r"cos and sin shapes differ"),
        ((2, 2, 5, 8), (3, 5, 4), (3, 5, 4), {}, r"batch 3 .* batch 2"),
        ((1, 2, 5, 8), (5, 4), (5, 4), {"heads_dim": 3}, r"heads_dim must be 1 .* or 2"),
        ((2, 5, 8), (5, 4), (5, 4), {}, r"expected a 4-d tensor"),
        ((1, 2, 5, 8), (1, 1, 5, 4), (1, 1, 5, 4), {}, r"cos/sin must be \[s, r/2\] or \[b, s, r/2\]"),
        ((1, 2, 5, 8), (5, 0), (5, 0), {}, r"empty"),
    ],
)
def test_bad_input_raises_value_error(x_shape, cos_shape, sin_shape, kwargs, match):
    x = torch.zeros(x_shape)
    with pytest.raises(ValueError, match=match):
        rotate(x, torch.zeros(cos_shape), torch.zeros(sin_shape), **kwargs)
    with pytest.raises(ValueError, match=match):
        apply_rotary(x, x, torch.zeros(cos_shape), torch.zeros(sin_shape), **kwargs)


def test_integer_input_rejected():
    with pytest.raises(ValueError, match="floating-point"):
        rotate(torch.zeros(1, 1, 2, 4, dtype=torch.int64), torch.ones(2, 2), torch.zeros(2, 2))
