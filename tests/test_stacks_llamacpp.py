"""The pure parts of ``make stacks`` (``benchmarks/llamacpp_tools``), without llama.cpp: the parser that
turns ``ropelab export --format llama.cpp`` flags into ``llama_cpp.Llama`` arguments, and the float32
GGUF writer."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from ropelab import Rope
from ropelab.errors import RopeConfigError
from ropelab.export import to_llamacpp
from ropelab.rope.frequencies import METHODS

TOOLS = Path(__file__).parents[1] / "benchmarks" / "llamacpp_tools"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"llamacpp_tools_{name}", TOOLS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


flags_mod = _load("flags")
gguf_f32 = _load("gguf_f32")
parse_flags = flags_mod.parse_flags


# ------------------------------------------------------------------------------------------ flags
def _exportable() -> list[Rope]:
    """One Rope per method and per option that changes llama.cpp's export (those export refuses skipped)."""
    ropes = []
    common = {"head_dim": 64, "base": 100000.0, "original_max_position_embeddings": 8192}
    for method in METHODS:
        kwargs = dict(common) if method != "default" else {"head_dim": 64, "base": 100000.0}
        if method != "default":
            kwargs["factor"] = 4.0
        try:
            ropes.append(Rope(method, **kwargs))
        except RopeConfigError:
            continue
    for extra in (
        {"attention_factor": 1.0},
        {"attention_factor": 1.3, "beta_fast": 16.0, "beta_slow": 2.0},
        {"mscale": 0.707, "mscale_all_dim": 0.707},
        {"mscale": 1.0, "mscale_all_dim": 0.5},
    ):
        ropes.append(Rope("yarn", factor=2.0, **common, **extra))
    out = []
    for rope in ropes:
        try:
            to_llamacpp(rope)
        except RopeConfigError:
            continue
        out.append(rope)
    return out


def test_every_exported_flag_set_parses():
    ropes = _exportable()
    methods = {r.config.method for r in ropes}
    assert {"default", "linear", "ntk", "yarn", "ntk-by-parts"} <= methods
    emitted = set()
    for rope in ropes:
        flags = to_llamacpp(rope)["flags"]
        emitted.update(f for f in flags if f.startswith("-"))
        kwargs = parse_flags(flags)
        cfg = rope.config
        assert kwargs["rope_scaling_type"] == {"default": 0, "ntk": 0, "linear": 1}.get(cfg.method, 2)
        if cfg.method in ("linear", "yarn", "ntk-by-parts"):
            assert math.isclose(kwargs["rope_freq_scale"], 1.0 / cfg.scale)
            assert math.isclose(kwargs["rope_freq_base"], cfg.base)
            assert kwargs["n_ctx"] == round(8192 * cfg.scale)
        if cfg.method in ("yarn", "ntk-by-parts"):
            assert kwargs["yarn_orig_ctx"] == 8192
    assert emitted <= set(flags_mod.KNOWN_FLAGS)


def test_flag_values_as_llamacpp_reads_them():
    kwargs = parse_flags(
        [
            "--rope-scaling", "yarn", "--rope-scale", "4", "--rope-freq-base", "100000",
            "--yarn-orig-ctx", "8192", "--yarn-beta-fast", "32", "--yarn-beta-slow", "1",
            "--yarn-attn-factor", "0.9", "--yarn-ext-factor", "1", "--ctx-size", "32768",
            "--override-kv", "llama.rope.scaling.attn_factor=float:0.8,general.name=str:x",
            "--override-kv", "llama.context_length=int:32768",
        ]
    )  # fmt: skip
    assert kwargs == {
        "rope_scaling_type": 2,
        "rope_freq_scale": 0.25,
        "rope_freq_base": 100000.0,
        "yarn_orig_ctx": 8192,
        "yarn_beta_fast": 32.0,
        "yarn_beta_slow": 1.0,
        "yarn_attn_factor": 0.9,
        "yarn_ext_factor": 1.0,
        "n_ctx": 32768,
        "kv_overrides": {
            "llama.rope.scaling.attn_factor": 0.8,
            "general.name": "x",
            "llama.context_length": 32768,
        },
    }
    assert parse_flags(["--override-kv", "tokenizer.ggml.add_bos_token=bool:false"]) == {
        "kv_overrides": {"tokenizer.ggml.add_bos_token": False}
    }


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rope-scaling", "yarn", "--flash-attn"], "unknown llama.cpp flag '--flash-attn'"),
        (["--grp-attn-n", "4"], "unknown llama.cpp flag"),
        (["--rope-scaling", "longrope"], "takes one of none, linear, yarn"),
        (["--rope-scale"], "needs a value"),
        (["--rope-scale", "0"], "positive"),
        (["--yarn-orig-ctx", "8k"], "integer"),
        (["--ctx-size", "1", "-c", "2"], "given twice"),
        (["--override-kv", "llama.rope.scaling.attn_factor=0.8"], "KEY=TYPE:VALUE"),
        (["--override-kv", "a=double:0.8"], "unknown type 'double'"),
        (["--override-kv", "a=bool:yes"], "true or false"),
    ],
)
def test_unknown_or_malformed_flags_are_refused(flags, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse_flags(flags)


# ------------------------------------------------------------------------------------- F32 GGUF
def _tiny_gguf(path: Path) -> dict[str, np.ndarray]:
    """A small GGUF with quantised (Q8_0, Q4_1), F16 and F32 tensors and typed metadata of every kind."""
    import gguf

    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_uint32("llama.block_count", 1)
    writer.add_float32("llama.rope.freq_base", 100000.0)
    writer.add_string("general.name", "tiny")
    writer.add_bool("tokenizer.ggml.add_bos_token", False)
    writer.add_uint32("general.file_type", int(gguf.LlamaFileType.MOSTLY_Q4_1))
    writer.add_uint32("general.quantization_version", 2)
    writer.add_key_value("tokenizer.ggml.tokens", ["a", "b", "<|x|>"], gguf.GGUFValueType.ARRAY,
                         sub_type=gguf.GGUFValueType.STRING)  # fmt: skip
    writer.add_key_value("tokenizer.ggml.token_type", [1, 1, 3], gguf.GGUFValueType.ARRAY,
                         sub_type=gguf.GGUFValueType.INT32)  # fmt: skip
    values = {
        "token_embd.weight": rng.standard_normal((6, 64)).astype(np.float32),
        "blk.0.attn_q.weight": rng.standard_normal((4, 64)).astype(np.float32),
        "blk.0.ffn_up.weight": rng.standard_normal((3, 32)).astype(np.float32),
        "blk.0.attn_norm.weight": rng.standard_normal(64).astype(np.float32),
    }
    kinds = {
        "token_embd.weight": gguf.GGMLQuantizationType.Q8_0,
        "blk.0.attn_q.weight": gguf.GGMLQuantizationType.Q4_1,
        "blk.0.ffn_up.weight": gguf.GGMLQuantizationType.F16,
        "blk.0.attn_norm.weight": gguf.GGMLQuantizationType.F32,
    }
    expected = {}
    for name, x in values.items():
        packed = gguf.quants.quantize(x, kinds[name])
        writer.add_tensor(name, packed, raw_dtype=kinds[name])
        expected[name] = gguf.quants.dequantize(packed, kinds[name]).reshape(x.shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return expected


def test_f32_gguf_round_trip(tmp_path):
    import gguf

    src, dst = tmp_path / "q.gguf", tmp_path / "sub" / "f32.gguf"
    expected = _tiny_gguf(src)
    assert gguf_f32.write_f32_gguf(src, dst) == dst
    assert not (tmp_path / "sub" / "f32.gguf.part").exists()
    before, after = gguf.GGUFReader(src), gguf.GGUFReader(dst)

    def meta(reader):
        return {
            k: ([t.name for t in f.types], f.contents())
            for k, f in reader.fields.items()
            if not k.startswith("GGUF.")
        }

    old, new = meta(before), meta(after)
    assert new.pop("general.file_type") == (["UINT32"], int(gguf.LlamaFileType.ALL_F32))
    old.pop("general.file_type")
    assert old.pop("general.quantization_version") == (["UINT32"], 2)
    assert new == old
    assert [t.name for t in after.tensors] == [t.name for t in before.tensors]
    for t_old, t_new in zip(before.tensors, after.tensors, strict=True):
        assert t_new.tensor_type == gguf.GGMLQuantizationType.F32
        assert t_new.shape.tolist() == t_old.shape.tolist()
        got = np.asarray(t_new.data).reshape(expected[t_new.name].shape)
        np.testing.assert_array_equal(got, expected[t_new.name])
    # lossy kinds really were quantised, so the test would see a writer that kept the packed bytes
    assert before.tensors[0].tensor_type == gguf.GGMLQuantizationType.Q8_0
