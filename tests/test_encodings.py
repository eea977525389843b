"""Tests for ropelab.encodings: closed forms, the embed/attend contract, GQA and KV-cache consistency."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from ropelab.attention import reference as ref
from ropelab.attention import rerope_attention, self_extend_attention
from ropelab.encodings import (
    ENCODINGS,
    ALiBi,
    Learned,
    NoPE,
    PositionEncoding,
    RotaryEncoding,
    Sinusoidal,
    XPos,
    alibi_slopes,
    make_encoding,
    repeat_kv,
    sinusoidal_table,
)
from ropelab.encodings.xpos import xpos_zeta
from ropelab.errors import RopeConfigError
from ropelab.rope import Rope, apply_rotary

L, HD = 24, 16


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def qkv(b=2, h=4, h_kv=2, s=L, hd=HD, seed=0):
    return (
        randn(b, h, s, hd, seed=seed),
        randn(b, h_kv, s, hd, seed=seed + 1),
        randn(b, h_kv, s, hd, seed=seed + 2),
    )


def causal(q, k, v):
    h = q.shape[1]
    return F.scaled_dot_product_attention(q, repeat_kv(k, h), repeat_kv(v, h), is_causal=True)


ALL = {
    "nope": lambda: make_encoding("nope"),
    "sinusoidal": lambda: make_encoding("sinusoidal", d_model=32),
    "learned": lambda: make_encoding("learned", d_model=32, max_positions=64),
    "rope": lambda: make_encoding("rope", head_dim=HD),
    "rope-yarn": lambda: make_encoding(
        "rope",
        method="yarn",
        head_dim=HD,
        factor=4.0,
        original_max_position_embeddings=8,
        layout="interleaved",
    ),
    "rope-dynamic-log-n": lambda: make_encoding(
        "rope", method="dynamic", head_dim=HD, factor=2.0, original_max_position_embeddings=8, log_n=True
    ),
    "rerope": lambda: make_encoding("rope", head_dim=HD, attention="rerope", window=6, block_size=5),
    "leaky-rerope": lambda: make_encoding("rope", head_dim=HD, attention="leaky-rerope", window=6, leak=4.0),
    "self-extend": lambda: make_encoding("rope", head_dim=HD, attention="self-extend", group=3, window=6),
    "xpos": lambda: make_encoding("xpos", head_dim=HD, gamma=8.0),
    "alibi": lambda: make_encoding("alibi", n_heads=4, block_size=7),
}


# ------------------------------------------------------------------------------------- the contract
@pytest.mark.parametrize("name", list(ALL))
def test_every_encoding_handles_gqa_kv_cache_and_batched_positions(name):
    enc = ALL[name]()
    assert isinstance(enc, PositionEncoding)
    q, k, v = qkv()
    pos = torch.arange(L)
    full = enc.attend(q, k, v, pos, pos)
    assert full.shape == q.shape and torch.isfinite(full).all()
    # GQA equals the same keys repeated to every query head
    torch.testing.assert_close(
        enc.attend(q, repeat_kv(k, 4), repeat_kv(v, 4), pos, pos), full, atol=1e-5, rtol=0
    )
    # KV cache: the last queries against every key give the last rows of the full call
    torch.testing.assert_close(
        enc.attend(q[:, :, -3:], k, v, pos[-3:], pos), full[:, :, -3:], atol=1e-5, rtol=0
    )
    # one decoding step
    torch.testing.assert_close(
        enc.attend(q[:, :, -1:], k, v, pos[-1:], pos), full[:, :, -1:], atol=1e-5, rtol=0
    )
    # per-batch positions [b, s] equal the shared ones
    torch.testing.assert_close(
        enc.attend(q, k, v, pos.expand(2, L), pos.expand(2, L)), full, atol=1e-5, rtol=0
    )
    x = randn(2, L, 32)
    assert enc.embed(x, pos).shape == x.shape


@pytest.mark.parametrize("name", list(ALL))
def test_config_round_trip(name):
    enc = ALL[name]()
    cfg = enc.config()
    assert cfg["name"] in ENCODINGS
    again = make_encoding(**cfg)
    assert type(again) is type(enc) and again.config() == cfg
    q, k, v = qkv()
    pos = torch.arange(L)
    if isinstance(enc, Learned):
        again.load_state_dict(enc.state_dict())
    x = randn(2, L, 32)
    torch.testing.assert_close(again.embed(x, pos), enc.embed(x, pos))
    torch.testing.assert_close(again.attend(q, k, v, pos, pos), enc.attend(q, k, v, pos, pos))


@pytest.mark.parametrize("name", ["nope", "sinusoidal", "learned"])
def test_absolute_and_nope_attend_is_causal_sdpa(name):
    enc = ALL[name]()
    q, k, v = qkv()
    pos = torch.arange(L)
    torch.testing.assert_close(enc.attend(q, k, v, pos, pos), causal(q, k, v), atol=1e-6, rtol=0)
    assert torch.equal(NoPE().embed(randn(2, L, 32), pos), randn(2, L, 32))


def test_registry_errors_name_the_key():
    with pytest.raises(RopeConfigError, match="did you mean 'alibi'"):
        make_encoding("alibii", n_heads=4)
    with pytest.raises(RopeConfigError, match="did you mean 'max_positions'"):
        make_encoding("learned", d_model=8, max_position=4)
    with pytest.raises(RopeConfigError, match="needs 'd_model'"):
        make_encoding("sinusoidal")
    with pytest.raises(RopeConfigError, match="did you mean 'window'"):
        make_encoding("rope", head_dim=8, attention="rerope", windw=4)
    with pytest.raises(RopeConfigError, match="did you mean 'yarn'"):
        make_encoding("rope", method="yarm", head_dim=8)
    assert all(len(info) == 3 and info.paper for info in ENCODINGS.values())


# --------------------------------------------------------------------------------------- sinusoidal
@pytest.mark.parametrize("d", [10, 7])
def test_sinusoidal_closed_form(d):
    positions = torch.tensor([0, 1, 7, 1000, 123456])
    table = sinusoidal_table(positions, d)
    assert table.shape == (5, d)
    for row, pos in enumerate(positions.tolist()):
        for c in range(d):
            angle = pos / 10000 ** (2 * (c // 2) / d)
            expected = math.sin(angle) if c % 2 == 0 else math.cos(angle)
            assert table[row, c].item() == pytest.approx(expected, abs=1e-6)
    enc = Sinusoidal(d)
    x = randn(2, 5, d)
    torch.testing.assert_close(enc.embed(x, positions), x + table)  # any position: no maximum length
    with pytest.raises(RopeConfigError, match="d_model"):
        enc.embed(randn(2, 5, d + 1), positions)


# ------------------------------------------------------------------------------------------ learned
def test_learned_table_and_error_past_it():
    torch.manual_seed(0)
    enc = Learned(64, max_positions=128)
    assert 0.015 < enc.table.weight.std().item() < 0.025
    x = randn(2, 5, 64)
    pos = torch.tensor([0, 3, 9, 127, 2])
    torch.testing.assert_close(enc.embed(x, pos), x + enc.table.weight[pos])
    with pytest.raises(RopeConfigError, match="max_positions=128"):
        enc.embed(x, torch.tensor([0, 1, 2, 3, 128]))
    with pytest.raises(RopeConfigError, match="max_positions"):
        Learned(8, max_positions=0)


# ------------------------------------------------------------------------------------------- rotary
ROPE_CASES = [
    Rope("default", head_dim=HD),
    Rope("linear", head_dim=HD, factor=2.0),
    Rope("ntk", head_dim=HD, factor=4.0),
    Rope("yarn", head_dim=HD, factor=4.0, original_max_position_embeddings=8),
    Rope("dynamic", head_dim=HD, factor=2.0, original_max_position_embeddings=8),
    Rope("llama3", head_dim=HD, base=500000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
         original_max_position_embeddings=16),
    Rope("default", head_dim=HD, partial_rotary_factor=0.5),
]  # fmt: skip


@pytest.mark.parametrize("layout", ["half", "interleaved"])
@pytest.mark.parametrize("rope", ROPE_CASES, ids=repr)
def test_rotary_attend_equals_apply_rotary_then_sdpa(rope, layout):
    enc = RotaryEncoding(rope, layout=layout)
    q, k, v = qkv()
    pos = torch.arange(L)
    cos, sin = rope.cos_sin(pos)
    qr, kr = apply_rotary(q, k, cos, sin, layout=layout)
    torch.testing.assert_close(enc.attend(q, k, v, pos, pos), causal(qr, kr, v), atol=1e-6, rtol=0)
    torch.testing.assert_close(enc.attend(q, k, v, pos, pos), causal(qr, kr, v), atol=1e-6, rtol=0)  # cached


def test_rotary_variants_call_the_attention_methods():
    rope = Rope("yarn", head_dim=HD, factor=4.0, original_max_position_embeddings=8)
    q, k, v = qkv()
    pos = torch.arange(L)
    enc = RotaryEncoding(rope, attention="rerope", window=5)
    torch.testing.assert_close(
        enc.attend(q, k, v, pos, pos), rerope_attention(q, k, v, pos, pos, rope, window=5)
    )
    enc = enc.replace(attention="self-extend", group=2, window=4)
    expected = self_extend_attention(q, k, v, pos, pos, rope, group=2, window=4)
    torch.testing.assert_close(enc.attend(q, k, v, pos, pos), expected)
    assert enc.leak is None and enc.group == 2


def test_rotary_copies_share_nothing_mutable():
    enc = RotaryEncoding(head_dim=HD, attention="rerope", window=4)
    yarn = enc.with_method("yarn", factor=4.0, original_max_position_embeddings=8)
    assert yarn is not enc and yarn.rope is not enc.rope
    assert enc.rope.config.method == "default" and yarn.rope.config.method == "yarn"
    assert yarn.attention == "rerope" and yarn.window == 4
    plain = yarn.replace(attention="rope")
    assert plain.window is None and yarn.window == 4
    log_n = plain.replace(log_n=True)
    assert log_n.rope.config.log_n and not plain.rope.config.log_n
    rope = Rope("default", head_dim=HD)
    assert RotaryEncoding(rope).rope is not rope
    with pytest.raises(AttributeError):
        enc.window = 8  # read-only


def test_rotary_option_errors():
    with pytest.raises(RopeConfigError, match="needs 'window'"):
        RotaryEncoding(head_dim=HD, attention="rerope")
    with pytest.raises(RopeConfigError, match="does not use 'leak'"):
        RotaryEncoding(head_dim=HD, attention="rerope", window=4, leak=2.0)
    with pytest.raises(RopeConfigError, match="did you mean 'self-extend'"):
        RotaryEncoding(head_dim=HD, attention="selfextend")
    with pytest.raises(RopeConfigError, match="head_dim"):
        RotaryEncoding(Rope("default", head_dim=HD), head_dim=32)
    with pytest.raises(RopeConfigError, match="original_max_position_embeddings"):
        RotaryEncoding(head_dim=HD, log_n=True)
    with pytest.raises(RopeConfigError, match="layout"):
        RotaryEncoding(head_dim=HD, layout="neox")
    with pytest.raises(RopeConfigError, match="head_dim"):
        RotaryEncoding()


# --------------------------------------------------------------------------------------------- xPos
def xpos_scores(enc, q, k, q_pos, k_pos):
    """Scores from xPos's own tables: rotate q and k with the decay folded in, then dot."""
    centre = 0.0
    qr = apply_rotary(q, None, *enc.tables(q_pos, centre, key=False), layout=enc.layout)[0]
    kr = apply_rotary(k, None, *enc.tables(k_pos, centre, key=True), layout=enc.layout)[0]
    return qr.double() @ kr.double().transpose(-1, -2)


@pytest.mark.parametrize("layout", ["half", "interleaved"])
def test_xpos_closed_form_and_relative_only(layout):
    enc = XPos(HD, gamma=16.0, layout=layout)
    q, k, _ = qkv(b=1, h=2, h_kv=2, s=10)
    pos = torch.arange(10)
    scores = xpos_scores(enc, q, k, pos, pos)
    rel = ref.relative_positions(pos, pos)  # [1, s, s]
    decay = xpos_zeta(HD) ** (rel[..., None] / 16.0)  # zeta_i^((n - m)/gamma), [1, s, s, d/2]
    inv_freq = 1.0 / 10000.0 ** (torch.arange(0, HD, 2, dtype=torch.float64) / HD)
    closed = ref.rotary_scores(q, k, rel, inv_freq, layout=layout, pair_weights=decay[:, None])
    torch.testing.assert_close(scores, closed, atol=1e-5, rtol=1e-5)
    # only n - m matters: shifting both positions leaves the scores unchanged
    torch.testing.assert_close(xpos_scores(enc, q, k, pos + 37, pos + 37), scores, atol=1e-5, rtol=1e-5)
    # attend = causal softmax of the closed-form scores
    v = randn(1, 2, 10, HD, seed=5)
    expected = ref.reference_attention(closed / math.sqrt(HD), v, pos, pos)
    torch.testing.assert_close(enc.attend(q, k, v, pos, pos).double(), expected, atol=1e-5, rtol=0)


def test_xpos_stable_at_long_positions():
    """Centring keeps the factors bounded: positions near 200k give the same output as near 0."""
    enc = XPos(HD)  # gamma 512: zeta_0^(200000/512) would underflow float32 without centring
    q, k, v = qkv()
    pos = torch.arange(L)
    near_zero = enc.attend(q, k, v, pos, pos)
    far = enc.attend(q, k, v, pos + 200_000, pos + 200_000)
    assert torch.isfinite(far).all()
    torch.testing.assert_close(far, near_zero, atol=1e-4, rtol=0)
    half = enc.attend(q.half(), k.half(), v.half(), pos + 200_000, pos + 200_000)
    assert half.dtype == torch.float16 and torch.isfinite(half).all()


# -------------------------------------------------------------------------------------------- ALiBi
def test_alibi_encoding_matches_explicit_bias():
    enc = ALiBi(4)
    q, k, v = qkv()
    pos = torch.arange(L)
    bias = enc.bias(pos, pos)  # [1, h, s, s]
    for h, m in enumerate(alibi_slopes(4).tolist()):
        assert bias[0, h, 5, 2].item() == pytest.approx(-m * 3)
    mask = torch.ones(L, L, dtype=torch.bool).tril()
    explicit = bias.masked_fill(~mask, float("-inf"))
    expected = F.scaled_dot_product_attention(q, repeat_kv(k, 4), repeat_kv(v, 4), attn_mask=explicit)
    torch.testing.assert_close(enc.attend(q, k, v, pos, pos), expected, atol=1e-5, rtol=0)
    assert "slopes" not in enc.state_dict()
    with pytest.raises(RopeConfigError, match="n_heads=4"):
        enc.attend(randn(2, 8, L, HD), k, v, pos, pos)


def test_bfloat16_inputs_run_and_stay_close():
    q, k, v = qkv()
    pos = torch.arange(L)
    for name in ("rope", "rerope", "self-extend", "xpos", "alibi"):
        enc = ALL[name]()
        low = enc.attend(q.bfloat16(), k.bfloat16(), v.bfloat16(), pos, pos)
        assert low.dtype == torch.bfloat16
        torch.testing.assert_close(low.float(), enc.attend(q, k, v, pos, pos), atol=5e-2, rtol=0)


def test_casting_a_model_keeps_exact_constants():
    """``module.to(bfloat16)`` (as a model cast does) must not round slopes or frequencies."""
    alibi, xpos = ALiBi(12).to(torch.bfloat16), XPos(HD).to(torch.bfloat16)
    assert torch.equal(alibi.slopes, alibi_slopes(12))
    assert xpos.zeta.dtype == torch.float64 and xpos.inv_freq.dtype == torch.float64
    assert list(alibi.state_dict()) == [] and list(xpos.state_dict()) == []
