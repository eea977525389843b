"""Exports to transformers, vLLM and llama.cpp say the same method, or refuse clearly."""

from __future__ import annotations

import logging
import math

import pytest
import torch
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from ropelab import Rope, RopeConfigError
from ropelab.export import export, to_hf, to_llamacpp, to_vllm

logging.getLogger("transformers").setLevel(logging.ERROR)


def hf_frequencies(rope_parameters: dict, head_dim: int, max_pos: int) -> tuple[torch.Tensor, float]:
    """What transformers computes for an exported rope_parameters dict."""
    config = LlamaConfig(
        hidden_size=head_dim * 2,
        num_attention_heads=2,
        head_dim=head_dim,
        max_position_embeddings=max_pos,
        rope_parameters=dict(rope_parameters),
        vocab_size=8,
        num_hidden_layers=1,
        intermediate_size=4,
    )
    rope_type = rope_parameters["rope_type"]
    if rope_type == "default":
        from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

        return LlamaRotaryEmbedding.compute_default_rope_parameters(config)
    return ROPE_INIT_FUNCTIONS[rope_type](config, None)


@pytest.mark.parametrize(
    "method,params",
    [
        ("default", {}),
        ("linear", {"factor": 4.0}),
        ("ntk", {"factor": 4.0}),
        ("ntk-by-parts", {"factor": 8.0, "original_max_position_embeddings": 2048}),
        ("yarn", {"factor": 8.0, "original_max_position_embeddings": 2048, "beta_fast": 16.0}),
        ("yarn", {"factor": 8.0, "original_max_position_embeddings": 2048, "truncate": False}),
        ("llama3", {"factor": 8.0, "original_max_position_embeddings": 8192}),
    ],
)
def test_hf_export_round_trips_through_transformers(method: str, params: dict) -> None:
    rope = Rope(method, head_dim=64, base=500000.0, **params)
    exported = export(rope, "hf")
    inv, scale = hf_frequencies(
        exported["rope_parameters"], 64, exported.get("max_position_embeddings", 4096)
    )
    ours, our_scale = rope.frequencies()
    torch.testing.assert_close(inv, ours, rtol=1e-6, atol=0)
    assert math.isclose(scale, our_scale, rel_tol=1e-12)


def test_hf_refuses_what_transformers_lacks() -> None:
    for rope in (
        Rope("ntk-mixed", factor=4.0),
        Rope("dynamic-yarn", original_max_position_embeddings=512),
        Rope("linear", factor=2.0, log_n=True, original_max_position_embeddings=512),
    ):
        with pytest.raises(RopeConfigError, match="cannot express"):
            to_hf(rope)


def test_vllm_ntk_mixed_formula() -> None:
    """vLLM's ntk scaling with mixed_b: theta_j / exp(ln(s)/(d/2)^b * j^b), j = 1..d/2."""
    rope = Rope("ntk-mixed", head_dim=64, factor=8.0, mixed_exponent=0.625)
    out = to_vllm(rope)
    params = out["hf_overrides"]["rope_parameters"]
    assert params == {"rope_type": "ntk", "factor": 8.0, "mixed_b": 0.625, "rope_theta": 10000.0}
    d = 64
    j = torch.arange(1, d // 2 + 1, dtype=torch.float64)
    theta = 10000.0 ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    ref = theta / torch.exp(math.log(8.0) / (d / 2) ** 0.625 * j**0.625)
    torch.testing.assert_close(rope.frequencies()[0].double(), ref, rtol=1e-6, atol=0)
    assert "--hf-overrides" in out["command"] and "--rope-scaling" in out["legacy_command"]


def test_vllm_yarn_sets_model_length() -> None:
    out = to_vllm(Rope("yarn", factor=4.0, original_max_position_embeddings=32768))
    assert out["hf_overrides"]["max_position_embeddings"] == 131072
    assert out["args"][-2:] == ["--max-model-len", "131072"]


def test_llamacpp_flags() -> None:
    flags = to_llamacpp(Rope("linear", factor=4.0, original_max_position_embeddings=2048))["flags"]
    assert flags[:4] == ["--rope-scaling", "linear", "--rope-scale", "4"] and "8192" in flags
    ntk = Rope("ntk", head_dim=128, factor=4.0)
    flags = to_llamacpp(ntk)["flags"]
    base = float(flags[flags.index("--rope-freq-base") + 1])
    assert math.isclose(base, 10000.0 * 4.0 ** (128 / 126), rel_tol=1e-12)
    yarn = to_llamacpp(Rope("yarn", factor=4.0, original_max_position_embeddings=4096))["flags"]
    assert yarn[yarn.index("--yarn-orig-ctx") + 1] == "4096" and "--override-kv" not in yarn
    explicit = to_llamacpp(
        Rope("yarn", factor=4.0, original_max_position_embeddings=4096, attention_factor=1.0)
    )["flags"]
    key, _, value = explicit[explicit.index("--override-kv") + 1].partition("=float:")
    assert key == "llama.rope.scaling.attn_factor"
    assert math.isclose(float(value) * (0.1 * math.log(4.0) + 1), 1.0, rel_tol=1e-12)


@pytest.mark.parametrize(
    "method,params",
    [
        ("llama3", {"factor": 8.0, "original_max_position_embeddings": 8192}),
        ("dynamic", {"factor": 2.0, "original_max_position_embeddings": 4096}),
        ("yarn", {"factor": 2.0, "original_max_position_embeddings": 4096, "truncate": False}),
    ],
)
def test_llamacpp_refuses(method: str, params: dict) -> None:
    with pytest.raises(RopeConfigError, match=r"llama\.cpp cannot express"):
        to_llamacpp(Rope(method, **params))


def test_unknown_format() -> None:
    with pytest.raises(RopeConfigError, match="unknown export format"):
        export(Rope("default"), "onnx")


# ------------------------------------------------------------------ issue 10, defect 1: the length
#: meta-llama/Llama-3.1-8B config.json (RoPE part): factor 8, trained 8192, advertised 131072.
LLAMA31 = {
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 4096,
    "num_attention_heads": 32,
    "head_dim": 128,
    "max_position_embeddings": 131072,
    "rope_theta": 500000.0,
    "rope_scaling": {
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
}


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    from ropelab.cli import main

    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_advertised_length_wins_over_trained_times_factor() -> None:
    """Llama 3.1 says 131072 itself; 8192 x 8 = 65536 is not its length."""
    rope = Rope.from_hf(
        LLAMA31["rope_scaling"], head_dim=128, rope_theta=500000.0, max_position_embeddings=131072
    )
    assert export(rope, "hf")["max_position_embeddings"] == 131072
    vllm = to_vllm(rope)
    assert vllm["hf_overrides"]["max_position_embeddings"] == 131072
    assert vllm["args"][-2:] == ["--max-model-len", "131072"]
    assert vllm["legacy_args"][-2:] == ["--max-model-len", "131072"]


def test_explicit_length_wins_in_every_format() -> None:
    rope = Rope("yarn", factor=4.0, original_max_position_embeddings=4096, max_position_embeddings=12288)
    assert export(rope, "hf")["max_position_embeddings"] == 12288
    assert to_vllm(rope)["args"][-2:] == ["--max-model-len", "12288"]
    flags = to_llamacpp(rope)["flags"]
    assert flags[flags.index("--ctx-size") + 1] == "12288"


def test_length_derived_only_when_nothing_says_it() -> None:
    derived = Rope("yarn", factor=4.0, original_max_position_embeddings=4096)
    flags = to_llamacpp(derived)["flags"]
    assert flags[flags.index("--ctx-size") + 1] == "16384"
    # Qwen2.5 keeps max_position_embeddings = original (32768) and adds rope_scaling factor 4: the stated
    # length is the trained one, so the extended length is derived (as vLLM does for yarn)
    qwen = Rope.from_hf(
        {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768},
        head_dim=128,
        rope_theta=1e6,
        max_position_embeddings=32768,
    )
    assert to_vllm(qwen)["args"][-2:] == ["--max-model-len", "131072"]


def test_cli_export_of_llama31_config_keeps_131072(capsys, tmp_path) -> None:
    import json

    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA31))
    code, out, err = run_cli(
        capsys, "export", "--hf-config", str(path), "--format", "hf,vllm", "--out", str(tmp_path)
    )
    assert code == 0, err
    assert "--max-model-len 131072" in out and '"max_position_embeddings": 131072' in out
    assert "65536" not in out
    code, out, err = run_cli(
        capsys,
        "export",
        "--method",
        "yarn",
        "--factor",
        "4",
        "--trained-length",
        "4096",
        "--max-position-embeddings",
        "12000",
        "--format",
        "llama.cpp,vllm",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    assert "--ctx-size 12000" in out and "--max-model-len 12000" in out


def test_cli_inspect_of_llama31_config_looks_at_131072(capsys, tmp_path) -> None:
    import json

    from ropelab.report import read_jsonl

    path = tmp_path / "config.json"
    path.write_text(json.dumps(LLAMA31))
    code, _, err = run_cli(capsys, "inspect", "--hf-config", str(path), "--out", str(tmp_path))
    assert code == 0, err
    assert next(read_jsonl(tmp_path / "results.jsonl"))["target_length"] == 131072


# ------------------------------------------------------------------ defect 2: vLLM's static "dynamic"
def test_vllm_refuses_dynamic_ntk_with_the_reason() -> None:
    """vLLM's dynamic builds one table with base b*(s^2-s+1)^(d/(d-2)) for every position; ropelab's (and
    transformers') dynamic keeps b up to L0 and grows the base with the length: no vLLM config equals it."""
    rope = Rope("dynamic", factor=2.0, original_max_position_embeddings=4096)
    with pytest.raises(RopeConfigError, match=r"vLLM cannot express .*'dynamic'.*static") as err:
        to_vllm(rope)
    assert "\n" not in str(err.value)
    # the claim behind the refusal: below L0 ropelab keeps b, vLLM's one table does not
    d, s, b = 64, 2.0, 10000.0
    vllm_base = b * (s * (4096 * s) / 4096 - (s - 1)) ** (d / (d - 2))
    short = rope.frequencies(100)[0]
    assert torch.equal(short, Rope("default").frequencies()[0])
    assert not torch.allclose(short, Rope("default", base=vllm_base).frequencies()[0])


# ------------------------------------------------------------------ defect 3: vLLM LongRoPE
def vllm_longrope(params: dict, head_dim: int, max_model_len: int, max_position: int) -> tuple[list, float]:
    """What vLLM's Phi3LongRoPEScaledRotaryEmbedding applies (vLLM rotary_embedding/
    phi3_long_rope_scaled_rope.py, read at commit 63c2b7ab): one factor set for every position, long when
    max_model_len > original; mscale short_mscale / long_mscale, else sqrt(1 + ln(max_pos/L0)/ln L0)."""
    original = params["original_max_position_embeddings"]
    use_long = max_model_len > original
    scale = max_position / original
    derived = 1.0 if scale <= 1 else math.sqrt(1 + math.log(scale) / math.log(original))
    mscale = params.get("long_mscale" if use_long else "short_mscale", derived)
    ext = torch.tensor(params["long_factor" if use_long else "short_factor"], dtype=torch.float32)
    dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
    inv = 1.0 / (ext * params["rope_theta"] ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
    return inv, mscale


def longrope(**extra) -> Rope:
    short = [1.0 + i / 64 for i in range(32)]
    long = [1.0 + i / 4 for i in range(32)]
    return Rope(
        "longrope",
        head_dim=64,
        short_factor=short,
        long_factor=long,
        original_max_position_embeddings=4096,
        **extra,
    )


def test_vllm_longrope_keeps_an_explicit_attention_factor() -> None:
    rope = longrope(factor=32.0, attention_factor=1.3)
    out = to_vllm(rope)
    params = out["hf_overrides"]["rope_parameters"]
    length = out["hf_overrides"]["max_position_embeddings"]
    inv, mscale = vllm_longrope(params, 64, length, length)
    ours, our_scale = rope.frequencies(length)  # a sequence longer than L0: the long factors
    torch.testing.assert_close(inv, ours, rtol=1e-6, atol=0)
    assert math.isclose(mscale, our_scale, rel_tol=1e-12) and our_scale == 1.3


def test_vllm_longrope_states_the_long_factor_switch_precisely() -> None:
    """With max_model_len > L0 vLLM uses the long factors for every position; ropelab and transformers use
    the short ones for sequences up to L0. The export says so instead of differing silently."""
    rope = longrope(factor=32.0)
    out = to_vllm(rope)
    (difference,) = out["differences"]
    assert "long_factor for every position" in difference and "4096" in difference
    short_inv, _ = rope.frequencies(4096)
    vllm_inv, _ = vllm_longrope(out["hf_overrides"]["rope_parameters"], 64, 131072, 131072)
    assert not torch.allclose(short_inv, vllm_inv)  # the stated difference is real
    # served at most at L0, vLLM uses the short factors: exact, nothing to state
    capped = longrope(factor=32.0, max_position_embeddings=131072)
    assert to_vllm(capped)["differences"]  # 131072 > 4096
    same = longrope(factor=1.0)
    exact = to_vllm(same)
    assert exact["differences"] == []
    params = exact["hf_overrides"]["rope_parameters"]
    inv, mscale = vllm_longrope(params, 64, 4096, 4096)
    ours, our_scale = same.frequencies(4096)
    torch.testing.assert_close(inv, ours, rtol=1e-6, atol=0)
    assert math.isclose(mscale, our_scale, rel_tol=1e-12)


def test_cli_prints_what_differs(capsys, tmp_path) -> None:
    code, out, err = run_cli(
        capsys,
        "export",
        "--method",
        "longrope",
        "--head-dim",
        "4",
        "--short-factor",
        "1,1",
        "--long-factor",
        "2,3",
        "--factor",
        "4",
        "--trained-length",
        "1024",
        "--format",
        "vllm",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    assert "# differs from ropelab:" in out and "long_factor for every position" in out


@pytest.mark.parametrize(
    "method,extra,deepseek",
    [
        ("yarn", {}, False),
        ("yarn", {"attention_factor": 1.0}, False),
        ("ntk-by-parts", {}, False),
        ("yarn", {"mscale": 0.707, "mscale_all_dim": 0.707}, True),  # DeepSeek-V2
        ("yarn", {"mscale": 1.0, "mscale_all_dim": 1.0}, True),  # DeepSeek-V3
        ("yarn", {"mscale": 1.0, "mscale_all_dim": 0.5}, True),
        ("yarn", {"mscale": 0.707}, True),
        ("yarn", {"mscale": 1.0, "mscale_all_dim": 1.0, "attention_factor": 1.2}, True),
    ],
)
def test_vllm_yarn_attention_factor_reaches_the_kernel(method: str, extra: dict, deepseek: bool) -> None:
    """vLLM's plain YaRN applies (0.1 ln s + 1) * attn_factor and never reads attention_factor or the
    mscales; DeepSeek's deepseek_yarn applies g(s, mscale)/g(s, mscale_all_dim) * attn_factor (defaults 1, 0)
    and keeps reading mscale_all_dim for its softmax scale. The path the export targets is exact; the other
    one, where it differs, is stated."""
    rope = Rope(method, factor=40.0, original_max_position_embeddings=4096, **extra)
    out = to_vllm(rope)
    params = out["hf_overrides"]["rope_parameters"]
    g = 0.1 * math.log(40.0) + 1
    plain = g * params.get("attn_factor", 1.0)
    m, m_all = params.get("mscale", 1.0), params.get("mscale_all_dim", 0.0)
    ds = (0.1 * m * math.log(40.0) + 1) / (0.1 * m_all * math.log(40.0) + 1) * params.get("attn_factor", 1.0)
    expected = rope.frequencies()[1]
    assert math.isclose(ds if deepseek else plain, expected, rel_tol=1e-12)
    for key in ("mscale", "mscale_all_dim"):
        assert params.get(key) == extra.get(key)  # DeepSeek's attention reads mscale_all_dim itself
    other_differs = not math.isclose(plain if deepseek else ds, expected, rel_tol=1e-12)
    assert bool(out["differences"]) == (deepseek and other_differs)
    if out["differences"]:
        assert "ignores mscale/mscale_all_dim" in out["differences"][0]


# ------------------------------------------------------------------ defect 4: llama.cpp attention factor
def llamacpp_yarn_mscale(flags: list[str], arch: str = "llama") -> float:
    """The cos/sin multiplier current llama.cpp applies with these flags and a GGUF without
    ``rope.scaling.yarn_log_multiplier`` (llama.cpp 0c1e5709: llama-context.cpp overwrites the context's
    yarn_attn_factor with get_mscale(s) / (1 + 0.1 ln s) whenever YaRN is on, then multiplies the GGUF's
    ``<arch>.rope.scaling.attn_factor``; ggml-cpu ops.cpp rope_yarn multiplies 1 + 0.1 ln(1/freq_scale)),
    in float32 as llama.cpp computes it."""
    import numpy as np

    assert flags[flags.index("--rope-scaling") + 1] == "yarn"
    f32 = np.float32
    freq_scale = f32(1) / f32(float(flags[flags.index("--rope-scale") + 1]))
    factor = f32(1) / freq_scale
    get_mscale = f32(1) if factor <= 1 else f32(0.1) * np.log(factor) + f32(1)
    context = get_mscale * (f32(1) / (f32(1) + f32(0.1) * np.log(factor)))  # --yarn-attn-factor is lost
    key = f"{arch}.rope.scaling.attn_factor"
    overrides = [flags[i + 1] for i, flag in enumerate(flags) if flag == "--override-kv"]
    for item in overrides:
        name, _, value = item.partition("=")
        if name == key:
            kind, _, number = value.partition(":")
            assert kind == "float"
            context *= f32(float(number))
    return float(context * (f32(1) + f32(0.1) * np.log(f32(1) / freq_scale)))


@pytest.mark.parametrize(
    "method,extra",
    [
        ("ntk-by-parts", {}),
        ("yarn", {"attention_factor": 1.0}),
        ("yarn", {"attention_factor": 1.7}),
        ("yarn", {"mscale": 0.707, "mscale_all_dim": 0.707}),
        ("yarn", {"mscale": 1.0, "mscale_all_dim": 0.5}),
        ("yarn", {"mscale": 0.707}),
        ("yarn", {}),
    ],
)
def test_llamacpp_attention_factor_survives_current_llamacpp(method: str, extra: dict) -> None:
    rope = Rope(method, factor=16.0, original_max_position_embeddings=8192, base=100000.0, **extra)
    flags = to_llamacpp(rope)["flags"]
    assert "--yarn-attn-factor" not in flags  # overwritten by llama.cpp whenever YaRN is on
    assert math.isclose(llamacpp_yarn_mscale(flags), rope.frequencies()[1], rel_tol=2e-6)


def test_llamacpp_attention_factor_override_names_the_arch() -> None:
    rope = Rope("yarn", factor=4.0, original_max_position_embeddings=32768, attention_factor=1.0)
    flags = to_llamacpp(rope, arch="qwen2")["flags"]
    item = flags[flags.index("--override-kv") + 1]
    assert item.startswith("qwen2.rope.scaling.attn_factor=float:")
    assert math.isclose(llamacpp_yarn_mscale(flags, "qwen2"), 1.0, rel_tol=2e-6)
    with pytest.raises(RopeConfigError, match="arch"):
        to_llamacpp(rope, arch="Llama 3")
    with pytest.raises(RopeConfigError, match="yarn_log_multiplier"):
        to_llamacpp(rope, arch="deepseek2")


# ------------------------------------------------------------------ defect 5: HF dynamic keeps L0
def test_hf_dynamic_export_sets_the_trained_length() -> None:
    """transformers' dynamic NTK measures the length against max_position_embeddings: the export sets it
    to L0 so a model whose config states a longer length computes ropelab's frequencies."""
    rope = Rope("dynamic", factor=4.0, original_max_position_embeddings=2048, head_dim=64)
    out = export(rope, "hf")
    assert out["max_position_embeddings"] == 2048
    config = LlamaConfig(
        hidden_size=128,
        num_attention_heads=2,
        head_dim=64,
        max_position_embeddings=32768,  # the model's own config before the override
        vocab_size=8,
        num_hidden_layers=1,
        intermediate_size=4,
    )
    config.update(out)
    for seq_len in (100, 2048, 2049, 9000):
        inv, _ = ROPE_INIT_FUNCTIONS["dynamic"](config, None, seq_len=seq_len)
        torch.testing.assert_close(inv, rope.frequencies(seq_len)[0], rtol=1e-6, atol=0)


def test_cli_hf_dynamic_says_why(capsys, tmp_path) -> None:
    code, out, err = run_cli(
        capsys,
        "export",
        "--method",
        "dynamic",
        "--factor",
        "2",
        "--trained-length",
        "4096",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    assert '"max_position_embeddings": 4096' in out and "# note:" in out


# ------------------------------------------------------------------ defect 6: attention-level methods
@pytest.mark.parametrize("name", ["rerope", "leaky-rerope", "self-extend"])
def test_export_refuses_attention_methods_saying_why(capsys, tmp_path, name: str) -> None:
    from ropelab.hf.extend import ATTENTION_METHODS

    assert name in ATTENTION_METHODS  # the registry eval uses
    code, out, err = run_cli(capsys, "export", "--method", name, "--out", str(tmp_path))
    assert code == 2 and out == ""
    assert "unknown" not in err and err.count("\n") == 1
    assert "attention scores" in err and "ropelab.hf.extend" in err and f"ropelab eval --method {name}" in err


def test_export_refuses_log_n_saying_what_to_use(capsys, tmp_path) -> None:
    from ropelab.export import check_exportable

    with pytest.raises(RopeConfigError, match=r"log-n.*ropelab\.hf\.extend"):
        check_exportable("yarn+log-n")
    with pytest.raises(RopeConfigError, match=r"log-n.*ropelab\.hf\.extend"):
        to_vllm(Rope("linear", factor=2.0, log_n=True, original_max_position_embeddings=512))
    code, _, err = run_cli(
        capsys, "export", "--method", "linear+log-n", "--factor", "2", "--trained-length", "64"
    )
    assert code == 2 and "ropelab eval --method linear+log-n" in err
    check_exportable("yarn")  # a frequency method passes


# ------------------------------------------------------------------ per-layer configs in the CLI (C)
#: google/gemma-3 text config as transformers v5 writes it (RoPE part)
GEMMA3 = {
    "model_type": "gemma3_text",
    "hidden_size": 2560,
    "num_attention_heads": 8,
    "head_dim": 256,
    "max_position_embeddings": 131072,
    "layer_types": ["sliding_attention"] * 5 + ["full_attention"],
    "rope_parameters": {
        "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1000000.0},
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
    },
}
#: the same as transformers v4 wrote it (rope_scaling flat, rope_local_base_freq for the sliding layers)
GEMMA3_LEGACY = {
    "model_type": "gemma3_text",
    "hidden_size": 2560,
    "num_attention_heads": 8,
    "head_dim": 256,
    "max_position_embeddings": 131072,
    "rope_theta": 1000000.0,
    "rope_local_base_freq": 10000.0,
    "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
    "sliding_window_pattern": 6,
}


@pytest.mark.parametrize("config", [GEMMA3, GEMMA3_LEGACY], ids=["v5", "legacy"])
def test_parse_hf_config_reads_per_layer_rope(config: dict) -> None:
    from ropelab.rope import parse_hf_config, ropes_from_hf

    parsed = parse_hf_config(config)
    ropes = ropes_from_hf(
        parsed["rope_parameters"],
        head_dim=parsed["head_dim"],
        rope_theta=parsed["rope_theta"],
        max_position_embeddings=parsed["max_position_embeddings"],
        layer_types=parsed["layer_types"],
    )
    assert {lt: (r.config.method, r.config.base, r.config.scale) for lt, r in ropes.items()} == {
        "full_attention": ("linear", 1e6, 8.0),
        "sliding_attention": ("default", 1e4, 1.0),
    }


def test_parse_hf_config_deepseek_rotary_dim_and_phi3_original() -> None:
    from ropelab.rope import parse_hf_config

    deepseek = {
        "hidden_size": 7168,
        "num_attention_heads": 128,
        "qk_rope_head_dim": 64,
        "qk_nope_head_dim": 128,
        "max_position_embeddings": 163840,
        "rope_theta": 10000,
        "rope_scaling": {"type": "yarn", "factor": 40, "original_max_position_embeddings": 4096},
    }
    parsed = parse_hf_config(deepseek)
    assert parsed["head_dim"] == 64  # not 7168 / 128 = 56: DeepSeek rotates qk_rope_head_dim channels
    phi3 = {
        "hidden_size": 3072,
        "num_attention_heads": 32,
        "max_position_embeddings": 131072,
        "original_max_position_embeddings": 4096,
        "rope_scaling": {"type": "longrope", "short_factor": [1.0] * 48, "long_factor": [2.0] * 48},
    }
    assert parse_hf_config(phi3)["rope_parameters"]["original_max_position_embeddings"] == 4096
    with pytest.raises(RopeConfigError, match="JSON object"):
        parse_hf_config([1, 2])


def test_cli_export_and_inspect_per_layer_type(capsys, tmp_path) -> None:
    import json

    path = tmp_path / "config.json"
    path.write_text(json.dumps(GEMMA3))
    code, out, err = run_cli(
        capsys, "export", "--hf-config", str(path), "--format", "hf,vllm,llama.cpp", "--out", str(tmp_path)
    )
    assert code == 0, err
    assert "# layer type full_attention: Rope('linear'" in out and "# layer type sliding_attention" in out
    hf = json.loads(out.split("# hf\n")[1].split("# vllm")[0])
    assert hf["rope_parameters"]["full_attention"]["factor"] == 8.0
    assert hf["rope_parameters"]["sliding_attention"] == {"rope_theta": 10000.0, "rope_type": "default"}
    assert hf["max_position_embeddings"] == 131072
    assert "--rope-scaling linear --rope-scale 8 --rope-freq-base 1000000" in out
    # --method replaces the full-attention layers' RoPE and keeps the sliding ones
    code, out, err = run_cli(
        capsys,
        "export",
        "--hf-config",
        str(path),
        "--method",
        "yarn",
        "--factor",
        "4",
        "--format",
        "hf",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    hf = json.loads(out.split("# hf\n")[1])
    assert hf["rope_parameters"]["full_attention"]["rope_type"] == "yarn"
    assert hf["rope_parameters"]["full_attention"]["rope_theta"] == 1e6
    assert hf["rope_parameters"]["sliding_attention"]["rope_type"] == "default"
    code, out, err = run_cli(capsys, "inspect", "--hf-config", str(path), "--out", str(tmp_path / "i"))
    assert code == 0, err
    assert "## layer type full_attention" in out and "## layer type sliding_attention" in out
    code, _, err = run_cli(capsys, "export", "--hf-config", str(path), "--factor", "2")
    assert code == 2 and "give --method" in err
