"""Parity with transformers: ropelab's frequencies and attention scaling equal transformers' own.

Over a grid of factors (1 to 64, fractional too), head dims (32 to 256), bases (1e4 to 1e6) and
partial rotary factors (0.25 to 1), for every method transformers implements.
"""

from __future__ import annotations

import itertools
import logging
import math

import pytest
import torch

pytest.importorskip("transformers")
from transformers import GPTNeoXConfig, LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding

from ropelab import Rope

FACTORS = [1.0, 1.5, 2.0, 3.7, 4.0, 8.0, 16.0, 32.0, 64.0]
HEAD_DIMS = [32, 64, 80, 128, 256]
BASES = [10000.0, 500000.0, 1000000.0]
PARTIALS = [0.25, 0.5, 1.0]
TRAINED = 4096

logging.getLogger("transformers").setLevel(logging.ERROR)


def hf_config(head_dim: int, rope_parameters: dict, max_position_embeddings: int) -> LlamaConfig:
    """A transformers config whose rope_parameters is exactly ``rope_parameters``."""
    return LlamaConfig(
        hidden_size=head_dim * 4,
        num_attention_heads=4,
        head_dim=head_dim,
        max_position_embeddings=max_position_embeddings,
        rope_parameters=dict(rope_parameters),
        vocab_size=32,
        num_hidden_layers=1,
        intermediate_size=8,
    )


def assert_same(ours: tuple[torch.Tensor, float], theirs: tuple[torch.Tensor, float], where: str) -> None:
    inv, scale = ours
    ref_inv, ref_scale = theirs
    assert inv.dtype == torch.float32 and inv.shape == ref_inv.shape, where
    torch.testing.assert_close(inv, ref_inv.float(), rtol=1e-6, atol=0, msg=lambda m: f"{where}: {m}")
    assert torch.equal(inv, ref_inv.float()), f"{where}: not bit-identical"
    assert math.isclose(scale, float(ref_scale), rel_tol=1e-12), f"{where}: scaling {scale} vs {ref_scale}"


def grid():
    for head_dim, base, partial in itertools.product(HEAD_DIMS, BASES, PARTIALS):
        if int(head_dim * partial) % 2:
            continue
        yield head_dim, base, partial


def check(rope_parameters: dict, *, max_pos: int, seq_lens=(None,), **grid_point) -> None:
    head_dim = grid_point["head_dim"]
    params = dict(rope_parameters, rope_theta=grid_point["base"], partial_rotary_factor=grid_point["partial"])
    config = hf_config(head_dim, params, max_pos)
    fn = ROPE_INIT_FUNCTIONS[params["rope_type"]]
    rope = Rope.from_hf(params, head_dim=head_dim, max_position_embeddings=max_pos)
    for seq_len in seq_lens:
        ref = fn(config, None, seq_len=seq_len)
        assert_same(rope.frequencies(seq_len), ref, f"{params} head_dim={head_dim} seq_len={seq_len}")


def test_default_matches_transformers() -> None:
    for head_dim, base, partial in grid():
        config = GPTNeoXConfig(
            hidden_size=head_dim * 4,
            num_attention_heads=4,
            rotary_pct=partial,
            rope_parameters={"rope_type": "default", "rope_theta": base, "partial_rotary_factor": partial},
            vocab_size=32,
            num_hidden_layers=1,
            intermediate_size=8,
        )
        ref = GPTNeoXRotaryEmbedding.compute_default_rope_parameters(config)
        rope = Rope.from_hf({"rope_theta": base, "partial_rotary_factor": partial}, head_dim=head_dim)
        assert_same(rope.frequencies(), ref, f"default head_dim={head_dim} base={base} partial={partial}")


def test_linear_matches_transformers() -> None:
    for (head_dim, base, partial), factor in itertools.product(grid(), FACTORS):
        check(
            {"rope_type": "linear", "factor": factor},
            max_pos=TRAINED,
            head_dim=head_dim,
            base=base,
            partial=partial,
        )


def test_dynamic_matches_transformers_below_and_above_trained_length() -> None:
    seq_lens = (None, 100, TRAINED - 1, TRAINED, TRAINED + 1, 3 * TRAINED, 17 * TRAINED + 5)
    for (head_dim, base, partial), factor in itertools.product(grid(), FACTORS):
        check(
            {"rope_type": "dynamic", "factor": factor},
            max_pos=TRAINED,
            seq_lens=seq_lens,
            head_dim=head_dim,
            base=base,
            partial=partial,
        )


@pytest.mark.parametrize("truncate", [True, False])
@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"attention_factor": 0.8},
        {"beta_fast": 16.0, "beta_slow": 2.0},
        {"mscale": 0.707, "mscale_all_dim": 0.707},
        {"mscale": 1.0, "mscale_all_dim": 0.5},
    ],
    ids=["derived", "explicit-attention", "betas", "mscale-equal", "mscale-deepseek"],
)
def test_yarn_matches_transformers(truncate: bool, extra: dict) -> None:
    for (head_dim, base, partial), factor in itertools.product(grid(), FACTORS):
        params = {
            "rope_type": "yarn",
            "factor": factor,
            "original_max_position_embeddings": TRAINED,
            "truncate": truncate,
            **extra,
        }
        check(params, max_pos=int(TRAINED * factor), head_dim=head_dim, base=base, partial=partial)


def test_yarn_factor_derived_from_lengths_when_missing() -> None:
    """transformers derives factor = max_position_embeddings / original when factor is absent."""
    params = {
        "rope_type": "yarn",
        "factor": None,
        "original_max_position_embeddings": 2048,
        "rope_theta": 1e4,
    }
    config = hf_config(64, params, 8192)
    ref = ROPE_INIT_FUNCTIONS["yarn"](config, None)
    rope = Rope.from_hf(params, head_dim=64, max_position_embeddings=8192)
    assert_same(rope.frequencies(), ref, "yarn derived factor")
    assert rope.config.scale == 4.0


def test_llama3_matches_transformers() -> None:
    for (head_dim, base, partial), factor in itertools.product(grid(), FACTORS):
        for low, high in ((1.0, 4.0), (2.0, 8.0)):
            params = {
                "rope_type": "llama3",
                "factor": factor,
                "low_freq_factor": low,
                "high_freq_factor": high,
                "original_max_position_embeddings": 8192,
            }
            check(params, max_pos=131072, head_dim=head_dim, base=base, partial=partial)


@pytest.mark.parametrize("explicit", [None, 1.25])
def test_longrope_matches_transformers_short_and_long(explicit: float | None) -> None:
    gen = torch.Generator().manual_seed(0)
    for (head_dim, base, partial), factor in itertools.product(grid(), FACTORS[::2]):
        d = int(head_dim * partial)
        short = (1 + torch.rand(d // 2, generator=gen)).tolist()
        long = (1 + 10 * torch.rand(d // 2, generator=gen)).tolist()
        params = {
            "rope_type": "longrope",
            "short_factor": short,
            "long_factor": long,
            "original_max_position_embeddings": TRAINED,
            "factor": factor,
        }
        if explicit is not None:
            params["attention_factor"] = explicit
        check(
            params,
            max_pos=int(TRAINED * factor),
            seq_lens=(None, TRAINED, TRAINED + 1, 4 * TRAINED),
            head_dim=head_dim,
            base=base,
            partial=partial,
        )


def test_longrope_factor_from_lengths_like_phi3() -> None:
    """Phi-3 configs give no factor: the attention factor uses max_position / original."""
    d = 96
    params = {
        "rope_type": "longrope",
        "short_factor": [1.0] * (d // 2),
        "long_factor": [2.0] * (d // 2),
        "original_max_position_embeddings": 4096,
    }
    config = hf_config(d, dict(params, rope_theta=10000.0), 131072)
    rope = Rope.from_hf(params, head_dim=d, max_position_embeddings=131072)
    for seq_len in (None, 5000):
        assert_same(
            rope.frequencies(seq_len),
            ROPE_INIT_FUNCTIONS["longrope"](config, None, seq_len=seq_len),
            "phi3 longrope",
        )


def test_proportional_matches_transformers() -> None:
    for (head_dim, base, partial), factor in itertools.product(grid(), FACTORS[::2]):
        check(
            {"rope_type": "proportional", "factor": factor},
            max_pos=TRAINED,
            head_dim=head_dim,
            base=base,
            partial=partial,
        )


def test_cos_sin_float32_mode_matches_transformers_rotary_module() -> None:
    """precision='float32' reproduces transformers' rotary forward (cos/sin in the model dtype)."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    params = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 2048, "rope_theta": 1e4}
    config = hf_config(64, params, 8192)
    module = LlamaRotaryEmbedding(config)
    positions = torch.arange(0, 9000, 7)[None]
    for dtype in (torch.float32, torch.bfloat16):
        ref_cos, ref_sin = module(torch.zeros(1, dtype=dtype), positions)
        rope = Rope.from_hf(params, head_dim=64, max_position_embeddings=8192)
        cos, sin = rope.cos_sin(positions, dtype=dtype, precision="float32")
        assert torch.equal(torch.cat((cos, cos), -1), ref_cos)
        assert torch.equal(torch.cat((sin, sin), -1), ref_sin)


def test_legacy_rope_scaling_dict_and_type_key() -> None:
    legacy = {"type": "linear", "factor": 2.0}
    rope = Rope.from_hf(legacy, head_dim=64, rope_theta=500000.0)
    assert rope.config.method == "linear" and rope.config.base == 500000.0
    modern = Rope.from_hf({"rope_type": "linear", "factor": 2.0, "rope_theta": 500000.0}, head_dim=64)
    assert torch.equal(rope.frequencies()[0], modern.frequencies()[0])
    assert Rope.from_hf(None, head_dim=64).config.method == "default"


# ------------------------------------------------------- DeepSeek-style YaRN and truncate (issue 10)
#: DeepSeek-V3 config.json: rope_theta 10000, qk_rope_head_dim 64, max_position_embeddings 163840
DEEPSEEK_V3 = {
    "type": "yarn",
    "factor": 40,
    "original_max_position_embeddings": 4096,
    "beta_fast": 32,
    "beta_slow": 1,
    "mscale": 1.0,
    "mscale_all_dim": 1.0,
}
#: DeepSeek-V2 (and V2-Lite) config.json: the same, with mscale = mscale_all_dim = 0.707
DEEPSEEK_V2 = dict(DEEPSEEK_V3, mscale=0.707, mscale_all_dim=0.707)
#: gpt-oss config.json: rope_theta 150000, head_dim 64, max_position_embeddings 131072
GPT_OSS = {
    "rope_type": "yarn",
    "factor": 32.0,
    "original_max_position_embeddings": 4096,
    "beta_fast": 32.0,
    "beta_slow": 1.0,
    "truncate": False,
}


def model_config(model_type: str, rope_scaling: dict, **kw):
    from transformers import AutoConfig

    return AutoConfig.for_model(
        model_type, rope_scaling=dict(rope_scaling), num_hidden_layers=1, vocab_size=8, **kw
    )


@pytest.mark.parametrize(
    "rope_scaling",
    [
        DEEPSEEK_V3,
        DEEPSEEK_V2,
        {k: v for k, v in DEEPSEEK_V3.items() if k != "mscale_all_dim"},  # mscale alone: ignored
        dict(DEEPSEEK_V3, mscale=0.707, mscale_all_dim=None),
        dict(DEEPSEEK_V3, mscale=None, mscale_all_dim=0.707),  # mscale_all_dim alone: ignored
        dict(DEEPSEEK_V3, mscale=1.0, mscale_all_dim=0.707),  # a ratio different from 1
        dict(DEEPSEEK_V3, factor=None),  # derived: 163840 / 4096 = 40
        dict(DEEPSEEK_V2, attention_factor=0.9),  # explicit wins over the mscales
    ],
    ids=[
        "v3",
        "v2",
        "mscale-alone",
        "mscale-all-dim-none",
        "all-dim-alone",
        "ratio",
        "no-factor",
        "explicit",
    ],
)
def test_deepseek_yarn_matches_transformers(rope_scaling: dict) -> None:
    config = model_config(
        "deepseek_v3", rope_scaling, rope_theta=10000.0, qk_rope_head_dim=64, max_position_embeddings=163840
    )
    ref = ROPE_INIT_FUNCTIONS["yarn"](config, None)
    rope = Rope.from_hf(config.rope_parameters, head_dim=config.head_dim, max_position_embeddings=163840)
    assert config.head_dim == 64
    assert_same(rope.frequencies(), ref, f"deepseek {rope_scaling}")
    if rope_scaling.get("factor") is None:
        assert rope.config.scale == 40.0


def test_deepseek_v2_config_class_matches_transformers() -> None:
    config = model_config(
        "deepseek_v2", DEEPSEEK_V2, rope_theta=10000.0, qk_rope_head_dim=64, max_position_embeddings=163840
    )
    ref = ROPE_INIT_FUNCTIONS["yarn"](config, None)
    rope = Rope.from_hf(
        config.rope_parameters, head_dim=config.qk_rope_head_dim, max_position_embeddings=163840
    )
    assert_same(rope.frequencies(), ref, "deepseek-v2")
    assert rope.frequencies()[1] == 1.0  # g(40, 0.707) / g(40, 0.707)


@pytest.mark.parametrize("truncate", [False, True, None])
def test_gpt_oss_yarn_matches_transformers(truncate: bool | None) -> None:
    """gpt-oss ships truncate=false; transformers reads ``truncate`` with ``if truncate:``, so null does
    not truncate either."""
    config = model_config(
        "gpt_oss",
        dict(GPT_OSS, truncate=truncate),
        rope_theta=150000.0,
        head_dim=64,
        max_position_embeddings=131072,
    )
    ref = ROPE_INIT_FUNCTIONS["yarn"](config, None)
    rope = Rope.from_hf(config.rope_parameters, head_dim=64, max_position_embeddings=131072)
    assert_same(rope.frequencies(), ref, f"gpt-oss truncate={truncate}")
    assert rope.config.truncate is bool(truncate)


def test_yarn_without_a_factor_key_is_refused_by_transformers_and_derived_by_ropelab() -> None:
    """transformers 5.24 requires the key (KeyError "Missing required keys") and derives only from an
    explicit null; ropelab derives max_position_embeddings / original for both, as for null."""
    params = {"rope_type": "yarn", "original_max_position_embeddings": 2048, "rope_theta": 1e4}
    with pytest.raises(KeyError, match="factor"):
        hf_config(64, params, 8192)
    assert Rope.from_hf(params, head_dim=64, max_position_embeddings=8192).config.scale == 4.0


def test_gemma3_per_layer_rope_matches_transformers() -> None:
    """Gemma 3: linear 8 on the global layers (base 1e6), plain RoPE base 1e4 on the sliding ones."""
    from transformers import AutoConfig
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding

    from ropelab.rope import ropes_from_hf

    rope_parameters = {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    }
    config = AutoConfig.for_model(
        "gemma3_text",
        head_dim=256,
        num_hidden_layers=6,
        max_position_embeddings=131072,
        rope_parameters=rope_parameters,
        vocab_size=8,
    )
    ropes = ropes_from_hf(
        config.rope_parameters, head_dim=256, max_position_embeddings=131072, layer_types=config.layer_types
    )
    assert_same(
        ropes["full_attention"].frequencies(),
        ROPE_INIT_FUNCTIONS["linear"](config, None, layer_type="full_attention"),
        "gemma3 full_attention",
    )
    assert_same(
        ropes["sliding_attention"].frequencies(),
        Gemma3RotaryEmbedding.compute_default_rope_parameters(config, layer_type="sliding_attention"),
        "gemma3 sliding_attention",
    )


def test_transformers_ignores_a_per_layer_truncate() -> None:
    """Pinned divergence (transformers 5.24): its YaRN reads ``config.rope_parameters.get("truncate")`` at
    the top level, so a nested ``truncate: false`` still truncates there; ropelab honours the entry."""
    from transformers import AutoConfig

    from ropelab.rope import ropes_from_hf

    yarn = {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 4096, "rope_theta": 1e6}
    nested = {"full_attention": dict(yarn, truncate=False), "sliding_attention": {"rope_type": "default"}}
    config = AutoConfig.for_model(
        "gemma3_text",
        head_dim=128,
        num_hidden_layers=6,
        max_position_embeddings=32768,
        rope_parameters=nested,
        vocab_size=8,
    )
    theirs, _ = ROPE_INIT_FUNCTIONS["yarn"](config, None, layer_type="full_attention")
    ours = ropes_from_hf(config.rope_parameters, head_dim=128, layer_types=config.layer_types)[
        "full_attention"
    ]
    truncated = Rope.from_hf(dict(yarn, truncate=True), head_dim=128)
    assert torch.equal(theirs, truncated.frequencies()[0])
    assert not ours.config.truncate and not torch.equal(theirs, ours.frequencies()[0])
