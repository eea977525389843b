"""Presets: every known model's published RoPE loads into ropelab and equals what transformers computes.

For each preset, the stored ``config.json`` subset is loaded the way ``from_pretrained`` loads a config
(``CONFIG_MAPPING[model_type].from_dict``), the model family's own rotary embedding module is built from it,
and its inverse frequencies and attention scaling are compared with ropelab's, bit for bit, per layer type.
Models transformers has no config class for (InternLM2's remote code, DeepSeek-V2's original ``deepseek``
type, copies without ``model_type``) are checked through ``LlamaConfig`` with the converted parameters.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import re

import pytest
import torch

from ropelab import Rope
from ropelab.errors import RopeConfigError
from ropelab.presets import ALL_LAYERS, PRESETS, Preset, get_preset, thaw

pytest.importorskip("transformers")
from transformers import LlamaConfig
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
from transformers.models.auto.configuration_auto import (
    CONFIG_MAPPING,
    model_type_to_module_name,
)
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

logging.getLogger("transformers").setLevel(logging.ERROR)

#: Presets transformers 5.24 cannot load from their own config.json, and why (checked through LlamaConfig).
HF_CANNOT_LOAD = {
    # Phi3Config standardizes rope_parameters while the legacy type is still "su", so the top-level
    # original_max_position_embeddings is never moved in and validation fails (configuration_phi3.py, 5.24.0).
    "phi-3-mini-128k": "Missing required keys",
}


def hf_model_config(preset: Preset):
    """(transformers config, rotary embedding class) built from the preset as ``from_pretrained`` would."""
    model_type = preset.config.get("model_type")
    if model_type in CONFIG_MAPPING and preset.name not in HF_CANNOT_LOAD:
        config = CONFIG_MAPPING[model_type].from_dict(thaw(preset.config))
        module_name = model_type_to_module_name(model_type)
        module = importlib.import_module(f"transformers.models.{module_name}.modeling_{module_name}")
        (rotary,) = [getattr(module, n) for n in dir(module) if n.endswith("RotaryEmbedding")]
        return config, rotary
    (params,) = preset.rope_parameters().values()
    config = LlamaConfig(
        hidden_size=preset.geometry.head_dim * 4,
        num_attention_heads=4,
        head_dim=preset.geometry.head_dim,
        max_position_embeddings=preset.geometry.max_position_embeddings,
        rope_parameters=params,
        vocab_size=32,
        num_hidden_layers=1,
        intermediate_size=8,
    )
    return config, LlamaRotaryEmbedding


def assert_same(ours: tuple[torch.Tensor, float], theirs: tuple[torch.Tensor, float], where: str) -> None:
    inv, scale = ours
    ref_inv, ref_scale = theirs
    assert inv.shape == ref_inv.shape, f"{where}: shape {tuple(inv.shape)} vs {tuple(ref_inv.shape)}"
    assert torch.equal(inv, ref_inv.float()), f"{where}: inverse frequencies differ"
    assert math.isclose(scale, float(ref_scale), rel_tol=1e-12), f"{where}: scaling {scale} vs {ref_scale}"


def test_at_least_25_presets_each_with_a_source() -> None:
    assert len(PRESETS) >= 25
    for name, preset in PRESETS.items():
        assert preset.name == name and re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", name), name
        assert re.fullmatch(r"[\w.\-]+/[\w.\-]+", preset.model_id), name
        assert preset.source.startswith("https://"), f"{name}: source must be a URL, got {preset.source!r}"
        assert "rope_theta" in preset.config or "rotary_emb_base" in preset.config, name


def test_preset_config_is_read_only() -> None:
    preset = get_preset("llama-3.1-8b")
    with pytest.raises(TypeError):
        preset.config["rope_theta"] = 1.0  # type: ignore[index]
    with pytest.raises(TypeError):
        preset.config["rope_scaling"]["factor"] = 2.0  # type: ignore[index]
    plain = preset.to_dict()["config"]
    plain["rope_scaling"]["factor"] = 2.0
    assert preset.config["rope_scaling"]["factor"] == 8.0
    assert json.loads(json.dumps(preset.to_dict()))["config"]["rope_scaling"]["rope_type"] == "llama3"


def test_unknown_preset_says_did_you_mean() -> None:
    expected = r"unknown preset 'llama-3.1-8' \(did you mean 'llama-3.1-8b'\?\)"
    with pytest.raises(RopeConfigError, match=expected):
        get_preset("llama-3.1-8")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_equals_transformers(name: str) -> None:
    """Converted rope_parameters, inverse frequencies, attention scaling: transformers', per layer type."""
    preset = get_preset(name)
    config, rotary_cls = hf_model_config(preset)
    ropes = preset.ropes()
    params = preset.rope_parameters()
    assert set(ropes) == set(params)
    nested = set(ropes) != {ALL_LAYERS}
    module = rotary_cls(config=config)
    for layer_type, rope in ropes.items():
        hf_params = config.rope_parameters[layer_type] if nested else config.rope_parameters
        for key, value in params[layer_type].items():
            assert hf_params[key] == value, f"{name} {layer_type}: {key} {value!r} vs {hf_params[key]!r}"
        prefix = f"{layer_type}_" if nested else ""
        reference = (getattr(module, f"{prefix}inv_freq"), getattr(module, f"{prefix}attention_scaling"))
        assert_same(rope.frequencies(), reference, f"{name} {layer_type}")
        rope_type = hf_params["rope_type"]
        if rope_type in ("dynamic", "longrope"):  # length-dependent: check around and past the trained length
            trained = rope.config.trained_length
            for seq_len in (trained, trained + 1, 4 * trained):
                ref = ROPE_INIT_FUNCTIONS[rope_type](
                    config, None, seq_len=seq_len, layer_type=layer_type if nested else None
                )
                assert_same(rope.frequencies(seq_len), ref, f"{name} {layer_type} seq_len={seq_len}")


def test_transformers_cannot_load_the_listed_configs() -> None:
    """Pin the transformers limitation worked around above: when it is fixed, drop the fallback."""
    for name, message in HF_CANNOT_LOAD.items():
        preset = get_preset(name)
        with pytest.raises((KeyError, ValueError), match=message):
            CONFIG_MAPPING[preset.config["model_type"]].from_dict(thaw(preset.config))


def test_gemma3_local_and_global_layers() -> None:
    """Gemma 3: every 6th layer global (base 1e6), the others local (base 1e4), as in transformers 5."""
    preset = get_preset("gemma-3-1b")
    config, _ = hf_model_config(preset)
    assert preset.layer_types() == list(config.layer_types)
    assert preset.layer_types()[:6] == ["sliding_attention"] * 5 + ["full_attention"]
    ropes = preset.ropes()
    assert ropes["full_attention"].config.base == 1_000_000
    assert ropes["sliding_attention"].config.base == 10_000
    scaled = get_preset("gemma-3-12b").ropes()  # rope_scaling reaches the global layers only
    full, local = scaled["full_attention"].config, scaled["sliding_attention"].config
    assert (full.method, full.scale, local.method, local.scale) == ("linear", 8.0, "default", 1.0)


def test_partial_rotary_and_mla_head_dims() -> None:
    """Rotary dims as transformers reads them: rotary_pct, partial_rotary_factor, qk_rope_head_dim."""
    assert get_preset("gpt-neox-20b").ropes()[ALL_LAYERS].rotary_dim == 6144 // 64 // 4
    assert get_preset("phi-4-mini").ropes()[ALL_LAYERS].rotary_dim == 96
    assert get_preset("deepseek-v3").ropes()[ALL_LAYERS].rotary_dim == 64
    assert get_preset("mistral-nemo").geometry.head_dim == 128  # not 5120 // 32


def test_summary_rows() -> None:
    (row,) = get_preset("llama-3.1-8b").summary()
    assert row["rope type"] == "llama3" and row["factor"] == 8.0 and row["L0"] == 8192
    assert row["max length"] == 131072 and row["base"] == 500000.0 and row["head_dim"] == 128
    rows = get_preset("gemma-3-1b").summary()
    assert {r["layers"] for r in rows} == {"full_attention", "sliding_attention"}


def test_rope_is_a_plain_rope() -> None:
    rope = get_preset("gpt-oss-20b").ropes()[ALL_LAYERS]
    assert isinstance(rope, Rope) and rope.config.truncate is False and rope.config.scale == 32.0


def test_cli_table_and_results(capsys, tmp_path) -> None:
    from ropelab.cli import main

    assert main(["presets", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["name", "model", "layers", "rope"]
    rows = [line for line in lines if line.split() and line.split()[0] in PRESETS]
    assert len(rows) == sum(len(p.rope_parameters()) for p in PRESETS.values())
    llama = next(line for line in rows if line.startswith("llama-3.1-8b "))
    assert llama.split()[2:] == ["all", "llama3", "500000", "8", "8192", "131072", "128", "128"]
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["preset"] for r in records] == list(PRESETS)
    assert all(r["source"] == PRESETS[r["preset"]].source for r in records)


def test_cli_show_prints_config_and_source(capsys, tmp_path) -> None:
    from ropelab.cli import main

    assert main(["presets", "--show", "phi-4-mini", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"# source: {get_preset('phi-4-mini').source}" in out
    assert '"partial_rotary_factor": 0.75' in out and '"rope_type": "longrope"' in out
    assert main(["presets", "--show", "phi-4-min", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'phi-4-mini'" in err


def test_presets_are_hashable_and_compare_by_value() -> None:
    preset = get_preset("qwen3-8b")
    same = Preset(**preset.to_dict())
    assert same == preset and hash(same) == hash(preset)
    assert {preset, same} == {preset}
