"""The lab model with every encoding: shapes, causality, gradients; the zero-shot methods build and run."""

from __future__ import annotations

import pytest
import torch

from ropelab.errors import RopeConfigError
from ropelab.lab.methods import DEFAULT_LABELS, method_encoding, method_params, split_label
from ropelab.lab.model import ModelConfig, TinyDecoder
from ropelab.lab.recipe import LAB_ENCODINGS, TrainRecipe, build_encoding
from ropelab.train.optim import adamw

TINY = {"length": 16, "d_model": 32, "layers": 2, "heads": 2, "mlp_ratio": 2, "max_multiple": 4}


def tiny_model(encoding: str, seed: int = 0) -> TinyDecoder:
    torch.manual_seed(seed)
    recipe = TrainRecipe(encoding=encoding, **TINY)
    return TinyDecoder(recipe.model_config(), build_encoding(recipe))


@pytest.mark.parametrize("encoding", LAB_ENCODINGS)
def test_forward_shape_causality_and_gradients(encoding: str) -> None:
    model = tiny_model(encoding)
    tokens = torch.randint(0, 256, (2, 40))
    logits = model(tokens)
    assert logits.shape == (2, 40, 256) and logits.dtype == torch.float32
    changed = tokens.clone()
    changed[:, 25] = (changed[:, 25] + 1) % 256
    again = model(changed)
    assert torch.allclose(logits[:, :25], again[:, :25], atol=1e-5)  # no peeking at later tokens
    assert not torch.allclose(logits[:, 25:], again[:, 25:])
    loss = model.loss((tokens[:, :-1], tokens[:, 1:]))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.encoding.name == encoding


def test_learned_rows_past_the_trained_length_stay_at_init() -> None:
    model = tiny_model("learned")
    table0 = model.encoding.table.weight.detach().clone()
    opt = adamw(model, lr=1e-2, weight_decay=0.1, no_decay=("encoding.",))
    for _ in range(3):
        tokens = torch.randint(0, 256, (4, 17))
        loss = model.loss((tokens[:, :-1], tokens[:, 1:]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    table = model.encoding.table.weight.detach()
    assert torch.equal(table[16:], table0[16:])
    assert not torch.equal(table[:16], table0[:16])


def test_model_config_rejects_unknown_keys_and_bad_geometry() -> None:
    with pytest.raises(RopeConfigError, match="did you mean 'n_heads'"):
        ModelConfig.from_dict({"n_head": 4})
    with pytest.raises(RopeConfigError, match="multiple of n_heads"):
        ModelConfig(d_model=30, n_heads=4)
    assert ModelConfig.from_dict(ModelConfig().to_dict()) == ModelConfig()
    assert TinyDecoder(ModelConfig(), build_encoding(TrainRecipe(encoding="rope"))).num_parameters() < 800_000


@pytest.mark.parametrize("label", DEFAULT_LABELS)
def test_every_zero_shot_method_runs_on_the_rope_model(label: str) -> None:
    model = tiny_model("rope")
    tokens = torch.randint(0, 256, (1, 48))
    model.encoding = method_encoding(label, head_dim=16, base=10000.0, trained=16, length=48)
    with torch.no_grad():
        out = model(tokens)
    assert out.shape == (1, 48, 256) and torch.isfinite(out).all()


def test_methods_at_the_trained_length_are_plain_rope() -> None:
    """s = L/T = 1: every method (without log-n) must leave a model at its trained length untouched."""
    model = tiny_model("rope")
    tokens = torch.randint(0, 256, (1, 16))
    with torch.no_grad():
        plain = model(tokens)
        for name in ("pi", "ntk", "yarn", "dynamic-ntk", "leaky-rerope", "self-extend", "none+log-n"):
            model.encoding = method_encoding(name, head_dim=16, base=10000.0, trained=16, length=16)
            assert torch.allclose(model(tokens), plain, atol=1e-5), name


def test_method_policy() -> None:
    assert method_params("pi", trained=128, length=512) == {"method": "linear", "log_n": False, "factor": 4.0}
    assert (
        method_params("self-extend+log-n", trained=128, length=2048)["group"] == 31
    )  # (128-64)*31+64 >= 2048
    leaky = method_params("leaky-rerope", trained=128, length=2048)
    assert leaky["window"] + (2047 - leaky["window"]) / leaky["leak"] <= 127
    assert split_label("yarn+log-n") == ("yarn", True)
    with pytest.raises(RopeConfigError, match="did you mean 'yarn'"):
        split_label("yarm")
    assert method_params("ntk*4+log-n", trained=128, length=512)["factor"] == 16.0
    with pytest.raises(RopeConfigError, match="static factor"):
        split_label("rerope*2")
