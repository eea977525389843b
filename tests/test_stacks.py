"""Each stack module against the semantics it encodes: agreements and every known divergence, pinned.

transformers: the installed library must equal ropelab bit for bit. vLLM and llama.cpp: the formulas
read from their source (module docs cite the commits); each divergence below is what a user of that
stack really gets, with the number.
"""

from __future__ import annotations

import math

import pytest
import torch

pytest.importorskip("transformers")

from ropelab import Rope
from ropelab.errors import RopeConfigError
from ropelab.stacks import llamacpp, transformers, vllm
from ropelab.stacks.check import reference_rope
from ropelab.stacks.config import read_config
from stack_configs import deepseek_v3, llama, llama31_8b, phi3_128k_style


def ref(config: dict, length: int) -> tuple[torch.Tensor, float]:
    inv, att = reference_rope(read_config(config)).frequencies(length)
    return inv.double(), att


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / b.abs()).max())


# --------------------------------------------------------------------------- reading a config.json
def test_read_config_standardises_like_transformers() -> None:
    phi = read_config(phi3_128k_style())
    assert phi.rope_type == "longrope"  # legacy "type" becomes rope_type
    assert phi.original == 4096  # Phi-3's top-level L0 moves inside
    assert phi.head_dim == 96 and phi.base == 10000.0
    nested = read_config({"model_type": "llava", "text_config": llama31_8b()})
    assert (
        nested.rope_type == "llama3" and nested.head_dim == 128 and nested.max_position_embeddings == 131072
    )
    yarn = read_config(llama({"rope_type": "yarn", "factor": 4.0}))
    assert yarn.original == 16384  # defaults to max_position_embeddings, as transformers


def test_read_config_rejects_bad_input_in_one_line() -> None:
    with pytest.raises(RopeConfigError, match="head_dim"):
        read_config({"rope_theta": 10000.0})
    with pytest.raises(RopeConfigError, match="JSON object"):
        read_config([1, 2])  # type: ignore[arg-type]
    with pytest.raises(RopeConfigError, match="rope_type='yarn' and type='linear'"):
        read_config(llama({"rope_type": "yarn", "type": "linear", "factor": 2.0}))


# --------------------------------------------------------------------------- transformers (installed)
@pytest.mark.parametrize(
    "config",
    [
        llama31_8b(),
        llama(None),
        llama({"rope_type": "linear", "factor": 4.0}),
        llama({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}),
        llama({"rope_type": "dynamic", "factor": 4.0}, max_pos=4096),
        phi3_128k_style(),
        deepseek_v3(mscale=0.707, mscale_all_dim=0.707),
    ],
    ids=["llama3.1", "default", "linear", "yarn", "dynamic", "longrope", "deepseek"],
)
def test_transformers_is_bit_identical_to_ropelab(config: dict) -> None:
    model = read_config(config)
    rope = reference_rope(model)
    trained = rope.config.trained_length or 1
    lengths = [trained, trained + 1, 4 * trained]
    plan = transformers.plan(model, lengths)
    assert plan.cannot is None and plan.source.startswith("transformers 5.")
    for ev in plan.evals:
        inv, att = rope.frequencies(ev.seq_len)
        assert torch.equal(ev.inv_freq, inv.double()), ev.seq_len
        assert ev.attention_factor == pytest.approx(att, rel=1e-12)


def test_transformers_longrope_switches_at_original_length() -> None:
    model = read_config(phi3_128k_style())
    short, long = transformers.plan(model, [4096, 4097]).evals
    base = Rope("default", head_dim=96, base=10000.0).frequencies()[0].double()
    factors = model.rope_parameters
    assert torch.allclose(
        base / short.inv_freq, torch.tensor(factors["short_factor"], dtype=torch.float64), rtol=1e-6
    )
    assert torch.allclose(
        base / long.inv_freq, torch.tensor(factors["long_factor"], dtype=torch.float64), rtol=1e-6
    )


def test_transformers_has_no_ntk() -> None:
    plan = transformers.plan(read_config(llama({"rope_type": "ntk", "factor": 4.0})), [16384])
    assert plan.cannot and "no rope_type 'ntk'" in plan.cannot


# --------------------------------------------------------------------------- vLLM (read from source)
def test_vllm_agrees_on_llama31_linear_and_yarn() -> None:
    for config in (
        llama31_8b(),
        llama({"rope_type": "linear", "factor": 4.0}),
        llama({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}),
    ):
        model = read_config(config)
        (ev,) = vllm.plan(model, [16384]).evals
        inv, att = ref(config, 16384)
        assert rel(ev.inv_freq, inv) < 1e-6 and ev.attention_factor == pytest.approx(att, rel=1e-9)


def test_vllm_dynamic_is_a_static_table_not_dynamic_ntk() -> None:
    config = llama({"rope_type": "dynamic", "factor": 4.0}, max_pos=4096)
    plan = vllm.plan(read_config(config), [4096, 16384])
    plain = Rope("default", head_dim=128, base=10000.0).frequencies()[0].double()
    for ev in plan.evals:  # the same table at every length: the plain base in the version read
        assert rel(ev.inv_freq, plain) < 1e-6
    assert rel(plan.evals[0].inv_freq, ref(config, 4096)[0]) < 1e-6  # equal up to L0 ...
    assert rel(plan.evals[1].inv_freq, ref(config, 16384)[0]) > 1.0  # ... far off at 4 * L0
    assert plan.max_length == 16384 and "static" in plan.why[0]


def test_vllm_deepseek_yarn_with_mscale_alone() -> None:
    s = 40.0
    alone = vllm.plan(read_config(deepseek_v3(mscale=0.707)), [163840]).evals[0]
    assert alone.attention_factor == pytest.approx(0.1 * 0.707 * math.log(s) + 1, rel=1e-12)
    assert ref(deepseek_v3(mscale=0.707), 163840)[1] == pytest.approx(0.1 * math.log(s) + 1, rel=1e-12)
    both = vllm.plan(read_config(deepseek_v3(mscale=0.707, mscale_all_dim=0.707)), [163840]).evals[0]
    assert (
        both.attention_factor
        == pytest.approx(1.0)
        == ref(deepseek_v3(mscale=0.707, mscale_all_dim=0.707), 1)[1]
    )


def test_vllm_yarn_drops_attention_factor() -> None:
    config = llama(
        {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 4096,
            "attention_factor": 1.0,
        }
    )
    plan = vllm.plan(read_config(config), [16384])
    assert plan.evals[0].attention_factor == pytest.approx(0.1 * math.log(4) + 1)
    assert ref(config, 16384)[1] == 1.0
    assert "attention_factor" in plan.why[0]


def test_vllm_longrope_uses_long_factors_everywhere_and_ignores_attention_factor() -> None:
    config = phi3_128k_style()
    config["rope_scaling"]["attention_factor"] = 1.25
    plan = vllm.plan(read_config(config), [4096, 131072])
    short_ref, long_ref = ref(config, 4096)[0], ref(config, 131072)[0]
    for ev in plan.evals:
        assert rel(ev.inv_freq, long_ref) < 1e-6  # long factors even at L0
        assert ev.attention_factor == pytest.approx(math.sqrt(1 + math.log(32) / math.log(4096)))
    assert rel(plan.evals[0].inv_freq, short_ref) > 0.5
    assert any("short_mscale" in w for w in plan.why)


def test_vllm_ntk_is_ntk_mixed_not_bloc97() -> None:
    config = llama({"rope_type": "ntk", "factor": 4.0})
    ev = vllm.plan(read_config(config), [16384]).evals[0]
    mixed = Rope("ntk-mixed", head_dim=128, base=10000.0, factor=4.0, mixed_exponent=1.0).frequencies()[0]
    assert rel(ev.inv_freq, mixed.double()) < 1e-6
    assert rel(ev.inv_freq, ref(config, 16384)[0]) > 1e-3


# --------------------------------------------------------------------------- llama.cpp (read from source)
def test_llamacpp_ggml_theta_is_float32_iterated_powers() -> None:
    theta = torch.from_numpy(llamacpp.ggml_theta(500000.0, 128)).double()
    exact = torch.tensor([500000.0 ** (-2 * i / 128) for i in range(64)], dtype=torch.float64)
    err = rel(theta, exact)
    assert 0 < err < 5e-6  # rounding of repeated float32 products, not a formula difference


def test_llamacpp_agrees_on_llama31_linear_yarn() -> None:
    for config in (
        llama31_8b(),
        llama({"rope_type": "linear", "factor": 4.0}),
        llama({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}),
    ):
        ev = llamacpp.plan(read_config(config), [16384]).evals[0]
        inv, att = ref(config, 16384)
        assert rel(ev.inv_freq, inv) < 1e-5 and ev.attention_factor == pytest.approx(att, rel=1e-9)


def test_llamacpp_yarn_truncate_false_cannot_be_expressed() -> None:
    config = llama(
        {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096, "truncate": False}
    )
    plan = llamacpp.plan(read_config(config), [16384])
    assert rel(plan.evals[0].inv_freq, ref(config, 16384)[0]) > 0.05
    assert "floors/ceils" in plan.why[0]


def test_llamacpp_overwrites_explicit_yarn_attention_factor() -> None:
    config = llama(
        {
            "rope_type": "yarn",
            "factor": 4.0,
            "original_max_position_embeddings": 4096,
            "attention_factor": 1.0,
        }
    )
    plan = llamacpp.plan(read_config(config), [16384])
    assert plan.detail["rope.scaling.yarn_attn_factor"] == 1.0  # the converter writes it ...
    assert plan.evals[0].attention_factor == pytest.approx(0.1 * math.log(4) + 1)  # ... runtime replaces it


def test_llamacpp_llama3_reads_l0_from_the_top_level() -> None:
    rope_scaling = {
        "rope_type": "llama3",
        "factor": 8.0,
        "original_max_position_embeddings": 4096,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
    }
    config = llama(rope_scaling, max_pos=32768)
    plan = llamacpp.plan(read_config(config), [32768])
    assert rel(plan.evals[0].inv_freq, ref(config, 32768)[0]) > 1.0  # built with L0 = 8192
    with_top = llama(rope_scaling, max_pos=32768, original_max_position_embeddings=4096)
    assert (
        rel(llamacpp.plan(read_config(with_top), [32768]).evals[0].inv_freq, ref(with_top, 32768)[0]) < 1e-5
    )


def test_llamacpp_has_no_dynamic_ntk() -> None:
    config = llama({"rope_type": "dynamic", "factor": 4.0}, max_pos=4096)
    plan = llamacpp.plan(read_config(config), [4096, 16384])
    plain = Rope("default", head_dim=128, base=10000.0).frequencies()[0].double()
    assert all(rel(ev.inv_freq, plain) < 1e-5 for ev in plan.evals)
    assert "no dynamic NTK" in plan.why[0]


def test_llamacpp_longrope_switches_by_context_size_for_phi3_only() -> None:
    config = phi3_128k_style()
    plan = llamacpp.plan(read_config(config), [4096, 131072])
    long_ref = ref(config, 131072)[0]
    assert all(rel(ev.inv_freq, long_ref) < 1e-5 for ev in plan.evals)  # n_ctx defaults to 131072
    assert plan.detail["rope.scaling.attn_factor"] == pytest.approx(
        math.sqrt(1 + math.log(32) / math.log(4096))
    )
    as_llama = dict(config, model_type="llama", architectures=["LlamaForCausalLM"])
    assert "Phi-3" in (llamacpp.plan(read_config(as_llama), [4096]).cannot or "")


def test_deepseek_v3_layout_rotates_qk_rope_head_dim() -> None:
    config = deepseek_v3(mscale=1.0, mscale_all_dim=1.0)
    del config["head_dim"]
    config.update(hidden_size=7168, num_attention_heads=128, qk_nope_head_dim=128, v_head_dim=128)
    model = read_config(config)
    assert model.head_dim == 64  # not hidden_size / heads = 56
    (ev,) = transformers.plan(model, [163840]).evals
    assert torch.equal(ev.inv_freq, ref(config, 163840)[0])


def test_transformers_nested_rope_parameters_checks_the_full_attention_layers() -> None:
    gemma3 = {
        "model_type": "gemma3_text",
        "hidden_size": 2560,
        "num_attention_heads": 8,
        "head_dim": 256,
        "max_position_embeddings": 131072,
        "rope_theta": 1000000.0,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": {"rope_type": "linear", "factor": 8.0},
        "sliding_window": 1024,
        "num_hidden_layers": 6,
    }
    plan = transformers.plan(read_config(gemma3), [131072])
    assert plan.cannot is None and plan.detail["layer_type"].startswith("full_attention")
    assert torch.equal(plan.evals[0].inv_freq, ref(gemma3, 131072)[0])


def test_yarn_without_factor_vllm_cannot_and_llamacpp_runs_plain_rope() -> None:
    config = llama({"rope_type": "yarn", "original_max_position_embeddings": 4096})  # factor = 16384 / 4096
    model = read_config(config)
    assert "factor" in (vllm.plan(model, [16384]).cannot or "")
    plan = llamacpp.plan(model, [16384])
    plain = Rope("default", head_dim=128, base=10000.0).frequencies()[0].double()
    assert rel(plan.evals[0].inv_freq, plain) < 1e-5 and "without 'factor'" in plan.why[0]
    assert reference_rope(model).config.scale == 4.0  # transformers and ropelab derive s from the lengths


def test_llamacpp_deepseek2_moves_the_yarn_magnitude_out_of_the_rope() -> None:
    config = deepseek_v3(mscale=0.707, mscale_all_dim=0.707)
    plan = llamacpp.plan(read_config(config), [163840])
    assert plan.detail["rope.scaling.yarn_log_multiplier"] == pytest.approx(0.0707)
    assert plan.evals[0].attention_factor == 1.0 == ref(config, 163840)[1]
    alone = llamacpp.plan(read_config(deepseek_v3(mscale=0.707)), [163840])  # no log_mul written
    assert alone.evals[0].attention_factor == pytest.approx(0.1 * math.log(40) + 1)
