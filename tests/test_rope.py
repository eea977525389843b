"""Properties of the methods' frequencies, cos/sin tables and configuration errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ropelab
from ropelab import METHODS, Rope, RopeConfigError

TRAINED = 2048


def make(method: str, factor: float = 4.0, head_dim: int = 64, base: float = 10000.0, **kw) -> Rope:
    """A Rope of ``method`` with the parameters it needs."""
    d = int(head_dim * kw.get("partial_rotary_factor", 1.0))
    needs = METHODS[method]
    params: dict = {"head_dim": head_dim, "base": base, **kw}
    if "factor" in needs.params:
        params["factor"] = factor
    if needs.needs_trained_length:
        params["original_max_position_embeddings"] = TRAINED
    if method == "longrope":
        params["short_factor"] = [1.0] * (d // 2)
        params["long_factor"] = [factor] * (d // 2)
    return Rope(method, **params)


def test_registry_has_every_method_with_doc_and_paper() -> None:
    expected = {
        "default",
        "linear",
        "ntk",
        "ntk-mixed",
        "dynamic",
        "ntk-by-parts",
        "yarn",
        "dynamic-yarn",
        "llama3",
        "longrope",
        "proportional",
    }
    assert expected <= set(METHODS)
    for name, method in METHODS.items():
        assert method.name == name and method.doc and method.paper
        inv, scale = method(make(name).config)
        assert inv.dtype == torch.float32 and torch.isfinite(inv).all() and scale > 0


@pytest.mark.parametrize("method", [m for m in METHODS if m != "dynamic-yarn"])
@pytest.mark.parametrize("head_dim,partial", [(64, 1.0), (128, 0.25), (80, 0.5)])
def test_factor_one_is_identity(method: str, head_dim: int, partial: float) -> None:
    default = make("default", head_dim=head_dim, partial_rotary_factor=partial)
    rope = make(method, factor=1.0, head_dim=head_dim, partial_rotary_factor=partial)
    inv, scale = rope.frequencies()
    if method == "proportional":  # exponents over head_dim: compare with its own definition
        angles = int(partial * head_dim // 2)
        ref = 10000.0 ** (-torch.arange(0, 2 * angles, 2, dtype=torch.float64) / head_dim)
        torch.testing.assert_close(inv[:angles].double(), ref, rtol=1e-6, atol=0)
        assert (inv[angles:] == 0).all()
    else:
        torch.testing.assert_close(inv, default.frequencies()[0], rtol=1e-6, atol=0)
    assert scale == 1.0


def test_dynamic_methods_fall_back_to_original_for_short_inputs() -> None:
    default = make("default").frequencies()[0]
    for method in ("dynamic", "dynamic-yarn"):
        rope = make(method)
        for seq_len in (None, 1, 100, TRAINED):
            inv, scale = rope.frequencies(seq_len)
            torch.testing.assert_close(inv, default, rtol=1e-6, atol=0)
            assert scale == 1.0
        longer, _ = rope.frequencies(4 * TRAINED)
        assert (longer <= default * (1 + 1e-6)).all() and (longer < default).any()


def test_dynamic_yarn_at_length_equals_static_yarn_of_that_ratio() -> None:
    dyn = make("dynamic-yarn")
    static = make("yarn", factor=3.0)
    inv, scale = dyn.frequencies(3 * TRAINED)
    assert torch.equal(inv, static.frequencies()[0]) and scale == static.frequencies()[1]


@given(
    factor=st.floats(1.0, 64.0),
    head_dim=st.sampled_from([32, 64, 128, 256]),
    base=st.sampled_from([1e4, 5e5, 1e6]),
)
@settings(max_examples=40, deadline=None)
def test_linear_is_default_over_factor(factor: float, head_dim: int, base: float) -> None:
    inv_default, _ = make("default", head_dim=head_dim, base=base).frequencies()
    inv_linear, _ = make("linear", factor=factor, head_dim=head_dim, base=base).frequencies()
    torch.testing.assert_close(inv_linear, inv_default / factor, rtol=1e-6, atol=0)


@given(
    factor=st.floats(1.0, 64.0),
    head_dim=st.sampled_from([32, 64, 128, 256]),
    base=st.sampled_from([1e4, 5e5, 1e6]),
    method=st.sampled_from(["yarn", "ntk-by-parts", "llama3", "ntk", "ntk-mixed"]),
)
@settings(max_examples=60, deadline=None)
def test_scaled_frequencies_lie_between_pi_and_original(factor, head_dim, base, method) -> None:
    """Every interpolating method sits between extrapolation (theta_i) and PI (theta_i / s)."""
    original, _ = make("default", head_dim=head_dim, base=base).frequencies()
    inv, _ = make(method, factor=factor, head_dim=head_dim, base=base).frequencies()
    assert (inv <= original * (1 + 1e-6)).all()
    assert (inv >= original / factor * (1 - 1e-6)).all()


def test_ntk_endpoints() -> None:
    """NTK-aware keeps the fastest pair and divides the slowest by exactly s (as PI)."""
    original, _ = make("default").frequencies()
    for method in ("ntk", "ntk-mixed"):
        inv, _ = make(method, factor=8.0).frequencies()
        torch.testing.assert_close(inv[-1], original[-1] / 8.0, rtol=1e-5, atol=0)
    assert make("ntk", factor=8.0).frequencies()[0][0] == original[0]


def test_yarn_attention_factor() -> None:
    assert make("yarn", factor=4.0).frequencies()[1] == pytest.approx(0.1 * math.log(4.0) + 1)
    assert make("yarn", factor=4.0, attention_factor=1.5).frequencies()[1] == 1.5
    assert make("ntk-by-parts", factor=4.0).frequencies()[1] == 1.0


def test_longrope_switches_factor_sets_at_trained_length() -> None:
    rope = make("longrope", factor=4.0)
    short, scale = rope.frequencies(TRAINED)
    long, scale_long = rope.frequencies(TRAINED + 1)
    torch.testing.assert_close(long, short / 4.0, rtol=1e-6, atol=0)
    assert scale == scale_long == pytest.approx(math.sqrt(1 + math.log(4.0) / math.log(TRAINED)))


def test_cos_sin_at_one_million_matches_float64_for_bf16_models() -> None:
    rope = make("yarn", factor=8.0, head_dim=128, base=500000.0)
    positions = torch.tensor([0, 1, 255, 256, 257, 2049, 123457, 999_999, 1_000_000])
    inv, scale = rope.frequencies()
    angles = positions[:, None].double() * inv.double()
    ref_cos, ref_sin = angles.cos() * scale, angles.sin() * scale
    cos32, sin32 = rope.cos_sin(positions)
    torch.testing.assert_close(cos32.double(), ref_cos, rtol=0, atol=1e-5)
    torch.testing.assert_close(sin32.double(), ref_sin, rtol=0, atol=1e-5)
    cos16, sin16 = rope.cos_sin(positions, dtype=torch.bfloat16)
    assert cos16.dtype == torch.bfloat16
    # the bf16 table is the float64 value rounded once: the position is not lost
    assert torch.equal(cos16, ref_cos.to(torch.bfloat16)) and torch.equal(sin16, ref_sin.to(torch.bfloat16))
    # whereas angles computed in bf16 (the peer bug) are far off at large positions
    naive = (positions[:, None].bfloat16() * inv.bfloat16()).float().cos() * scale
    assert (naive.double() - ref_cos).abs().max() > 0.1


def test_cos_sin_shapes_batch_positions_and_scaling() -> None:
    rope = make("yarn", factor=4.0)
    pos = torch.stack([torch.arange(10), torch.arange(5, 15)])
    cos, sin = rope.cos_sin(pos)
    assert cos.shape == sin.shape == (2, 10, 32)
    torch.testing.assert_close(cos[1, :5], cos[0, 5:])
    scale = rope.frequencies()[1]
    torch.testing.assert_close(cos**2 + sin**2, torch.full_like(cos, scale**2), rtol=1e-6, atol=1e-6)


def test_dynamic_cos_sin_uses_longest_position() -> None:
    rope = make("dynamic")
    short_cos, _ = rope.cos_sin(torch.arange(100))
    long_cos, _ = rope.cos_sin(torch.arange(4 * TRAINED))
    ref_short, _ = make("default").cos_sin(torch.arange(100))
    assert torch.equal(short_cos, ref_short)
    assert not torch.equal(long_cos[:100], ref_short)


def test_log_n_query_scale() -> None:
    rope = make("ntk", factor=4.0, log_n=True, original_max_position_embeddings=TRAINED)
    scale = rope.query_scale(torch.tensor([0, TRAINED - 1, 4 * TRAINED - 1]))
    assert scale[0] == 1.0 and scale[1] == pytest.approx(1.0)
    assert scale[2] == pytest.approx(math.log(4 * TRAINED) / math.log(TRAINED))
    assert (make("ntk").query_scale(torch.arange(10_000)) == 1).all()


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        ({"method": "yarm"}, "did you mean 'yarn'"),
        ({"method": "linear", "factor": 0.5}, "factor must be >= 1"),
        ({"method": "yarn", "factor": 4.0}, "needs original_max_position_embeddings"),
        ({"method": "llama3", "factor": 8.0}, "needs original_max_position_embeddings"),
        ({"method": "default", "log_n": True}, "log_n scaling needs original_max_position_embeddings"),
        (
            {
                "method": "longrope",
                "original_max_position_embeddings": 4,
                "short_factor": [1.0] * 3,
                "long_factor": [1.0] * 32,
            },
            "short_factor has 3 entries; it needs rotary_dim / 2 = 32",
        ),
        ({"method": "default", "head_dim": 63}, "must be even"),
        ({"method": "default", "head_dim": 64, "partial_rotary_factor": 0.3}, "must be even"),
        ({"method": "linear", "factor": float("nan")}, "finite"),
        ({"method": "linear", "factor": float("inf")}, "finite"),
        ({"method": "default", "base": float("nan")}, "finite"),
        ({"method": "linear", "factr": 2.0}, "did you mean 'factor'"),
        ({"method": "linear", "factor": 2.0, "beta_fast": 32.0}, "does not use 'beta_fast'"),
        (
            {"method": "dynamic-yarn", "factor": 4.0, "original_max_position_embeddings": 8},
            "does not use 'factor'",
        ),
        (
            {
                "method": "yarn",
                "factor": 2.0,
                "original_max_position_embeddings": 8,
                "beta_fast": 1.0,
                "beta_slow": 32.0,
            },
            "beta_fast",
        ),
    ],
)
def test_bad_config_raises_one_clear_error_base(kwargs: dict, fragment: str) -> None:
    kwargs = dict(kwargs)
    with pytest.raises(RopeConfigError) as err:
        Rope(kwargs.pop("method"), **kwargs)
    assert fragment in str(err.value)
    assert isinstance(err.value, ValueError)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "kwargs,fragment",
    [
        # finite values the formulas cannot take (issue 11, item 8): computed, not guessed thresholds
        ({"method": "ntk", "head_dim": 2, "factor": 2.0}, "rotary dim >= 4"),
        (
            {"method": "dynamic", "head_dim": 2, "factor": 2.0, "original_max_position_embeddings": 8},
            "rotary dim >= 4",
        ),
        ({"method": "linear", "factor": 1e300}, "not finite and > 0"),
        ({"method": "ntk", "factor": 1e300}, "cannot take these values"),
        ({"method": "default", "base": 1e300}, "not finite and > 0"),
        ({"method": "yarn", "factor": 2.0, "original_max_position_embeddings": 8, "beta_slow": -1.0}, "> 0"),
        (
            {
                "method": "llama3",
                "factor": 2.0,
                "original_max_position_embeddings": 8,
                "low_freq_factor": 0.0,
            },
            "> 0",
        ),
        (
            {
                "method": "yarn",
                "factor": 2.0,
                "original_max_position_embeddings": 8,
                "mscale": -20.0,
                "mscale_all_dim": 1.0,
            },
            "attention scaling",
        ),
        # nonsense that used to be accepted (item 9)
        (
            {"method": "yarn", "factor": 2.0, "original_max_position_embeddings": 8, "beta_fast": 0.0},
            "beta_fast",
        ),
        (
            {"method": "yarn", "factor": 2.0, "original_max_position_embeddings": 8, "truncate": "false"},
            "truncate",
        ),
        (
            {"method": "default", "original_max_position_embeddings": 8, "log_n": "no"},
            "log_n must be true or false",
        ),
        ({"method": "default", "head_dim": 64.5}, "head_dim must be a positive integer"),
        ({"method": "default", "head_dim": "64"}, "head_dim must be a number"),
    ],
)
def test_bad_config_raises_one_clear_error(kwargs: dict, fragment: str) -> None:
    kwargs = dict(kwargs)
    with pytest.raises(RopeConfigError) as err:
        Rope(kwargs.pop("method"), **kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_large_finite_values_that_work_are_accepted() -> None:
    """The limits are computed: a base of 1e30 still gives positive float32 frequencies."""
    inv_freq, _ = Rope("default", base=1e30).frequencies()
    assert bool((inv_freq > 0).all())
    assert Rope("linear", factor=1e30).frequencies()[0].min() > 0


def test_numpy_scalars_are_numbers() -> None:
    np = pytest.importorskip("numpy")
    rope = Rope(
        "yarn",
        head_dim=np.int64(64),
        factor=np.float32(4.0),
        original_max_position_embeddings=np.int32(8),
        truncate=np.bool_(False),
    )
    ref = Rope("yarn", head_dim=64, factor=4.0, original_max_position_embeddings=8, truncate=False)
    assert (
        rope.config == ref.config and type(rope.config.head_dim) is int and type(rope.config.factor) is float
    )
    assert torch.equal(rope.frequencies()[0], ref.frequencies()[0])
    with pytest.raises(RopeConfigError, match="must be a number"):
        Rope("linear", factor=np.bool_(True))


def test_hf_dict_flags_must_be_booleans() -> None:
    with pytest.raises(RopeConfigError, match="truncate must be true or false"):
        Rope.from_hf(
            {"rope_type": "yarn", "factor": 2.0, "truncate": "false"}, head_dim=64, max_position_embeddings=8
        )
    assert (
        Rope.from_hf(
            {"rope_type": "yarn", "factor": 2.0, "truncate": False}, head_dim=64, max_position_embeddings=8
        ).config.truncate
        is False
    )


def test_bad_hf_dicts() -> None:
    with pytest.raises(RopeConfigError, match=r"unknown rope_parameters key 'factro'.*did you mean 'factor'"):
        Rope.from_hf({"rope_type": "linear", "factro": 2.0}, head_dim=64)
    with pytest.raises(RopeConfigError, match="did you mean 'llama3'"):
        Rope.from_hf({"type": "llama-3", "factor": 2.0}, head_dim=64)
    with pytest.raises(RopeConfigError, match="needs original_max_position_embeddings"):
        Rope.from_hf({"rope_type": "yarn", "factor": 2.0}, head_dim=64)


def test_bad_positions() -> None:
    rope = make("default")
    with pytest.raises(RopeConfigError, match=">= 0"):
        rope.cos_sin(torch.tensor([-1, 0, 1]))
    with pytest.raises(RopeConfigError, match="non-finite"):
        rope.cos_sin(torch.tensor([0.0, float("nan")]))
    with pytest.raises(RopeConfigError, match="integers"):
        rope.cos_sin(torch.tensor([0.5]))
    with pytest.raises(RopeConfigError, match="seq_len"):
        rope.frequencies(0)


def test_public_surface() -> None:
    for name in ("METHODS", "Rope", "RopeConfig", "RopeConfigError", "apply_rotary", "alibi_slopes"):
        assert hasattr(ropelab, name), name


# ------------------------------------------------------------------ per-layer rope_parameters (issue 10)
GEMMA3_ROPE = {
    "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
    "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
}


def test_ropes_from_hf_one_rope_per_layer_type() -> None:
    from ropelab.rope import ALL_LAYERS, is_per_layer, ropes_from_hf

    layer_types = ["sliding_attention"] * 5 + ["full_attention"]
    assert is_per_layer(GEMMA3_ROPE) and is_per_layer(GEMMA3_ROPE, layer_types)
    ropes = ropes_from_hf(GEMMA3_ROPE, head_dim=256, max_position_embeddings=131072, layer_types=layer_types)
    assert list(ropes) == ["full_attention", "sliding_attention"]
    full, local = ropes["full_attention"], ropes["sliding_attention"]
    assert (full.config.method, full.config.scale, full.config.base) == ("linear", 8.0, 1e6)
    assert (local.config.method, local.config.base, local.config.head_dim) == ("default", 1e4, 256)
    torch.testing.assert_close(
        full.frequencies()[0], Rope("default", head_dim=256, base=1e6).frequencies()[0] / 8
    )
    # flat dicts keep working, under one key
    flat = ropes_from_hf({"rope_type": "linear", "factor": 2.0}, head_dim=64, rope_theta=5e5)
    assert list(flat) == [ALL_LAYERS] and flat[ALL_LAYERS].config.base == 5e5
    # a layer type without RoPE (None) is left out; shared defaults fill what an entry lacks
    nope = ropes_from_hf(
        {"full_attention": {"rope_type": "default"}, "chunked_attention": None},
        head_dim=64,
        rope_theta=123456.0,
    )
    assert list(nope) == ["full_attention"] and nope["full_attention"].config.base == 123456.0


def test_per_layer_errors_name_the_layer_type() -> None:
    from ropelab.rope import ropes_from_hf

    with pytest.raises(RopeConfigError, match=r"nested by layer type .*ropes_from_hf"):
        Rope.from_hf(GEMMA3_ROPE, head_dim=64)
    bad = {"full_attention": {"rope_type": "linear", "factro": 8.0}, "sliding_attention": {}}
    with pytest.raises(RopeConfigError, match=r"rope_parameters\['full_attention'\]: unknown .*'factro'"):
        ropes_from_hf(bad, head_dim=64)
    with pytest.raises(RopeConfigError, match=r"'ful_attention'.*did you mean 'full_attention'"):
        ropes_from_hf(
            {"ful_attention": {}, "sliding_attention": {}},
            head_dim=64,
            layer_types=["full_attention", "sliding_attention"],
        )
