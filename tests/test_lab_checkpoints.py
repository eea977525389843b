"""Checkpoints: safetensors round trip with config; the committed lab models and their recipe."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from ropelab.errors import RopeConfigError
from ropelab.lab.checkpoints import PACKAGE_CHECKPOINTS, load_checkpoint, read_meta, save_checkpoint
from ropelab.lab.model import TinyDecoder
from ropelab.lab.recipe import LAB_ENCODINGS, LAB_RECIPE, TrainRecipe, build_encoding, recipe_markdown


@pytest.mark.parametrize("encoding", ["learned", "rope", "alibi"])
def test_round_trip(tmp_path: Path, encoding: str) -> None:
    recipe = TrainRecipe(encoding=encoding, length=16, d_model=32, layers=2, heads=2, mlp_ratio=2)
    torch.manual_seed(0)
    model = TinyDecoder(recipe.model_config(), build_encoding(recipe))
    tokens = torch.randint(0, 256, (2, 20))
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, {"train": recipe.to_dict(), "data": {}}, dtype=torch.float32
    )
    loaded, meta = load_checkpoint(path)
    assert meta["train"] == recipe.to_dict() and meta["encoding"] == model.encoding.config()
    with torch.no_grad():
        assert torch.equal(loaded(tokens), model(tokens))
    half = save_checkpoint(tmp_path / "h.safetensors", model, {"train": recipe.to_dict()})
    assert half.stat().st_size < path.stat().st_size * 0.6
    loaded16, _ = load_checkpoint(half)
    with torch.no_grad():
        assert torch.allclose(loaded16(tokens), model(tokens), atol=2e-2)


def test_corpus_mismatch_warns_but_loads(tmp_path: Path) -> None:
    recipe = TrainRecipe(encoding="nope", length=16, d_model=32, layers=1, heads=2, mlp_ratio=2)
    model = TinyDecoder(recipe.model_config(), build_encoding(recipe))
    path = save_checkpoint(
        tmp_path / "m.safetensors", model, {"data": {"corpus_sha256": "a", "python": "3.0"}}
    )
    with pytest.warns(UserWarning, match="Python 3.0"):
        load_checkpoint(path, corpus_sha256="b")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(path, corpus_sha256="a")


def test_not_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(RopeConfigError, match="no checkpoint"):
        read_meta(tmp_path / "missing.safetensors")
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(2)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(RopeConfigError, match="not a ropelab lab checkpoint"):
        read_meta(tmp_path / "plain.safetensors")


def test_recipe_commands_round_trip_through_the_cli_parser() -> None:
    from ropelab.cli import build_parser

    parser = build_parser()
    for encoding in LAB_ENCODINGS:
        recipe = LAB_RECIPE.replace(encoding=encoding)
        args = parser.parse_args(recipe.command().split()[1:])
        again = TrainRecipe.from_dict({k: getattr(args, k) for k in recipe.to_dict()})
        assert again == recipe


def test_committed_recipe_file_is_generated_from_code() -> None:
    assert (PACKAGE_CHECKPOINTS / "RECIPE.md").read_text() == recipe_markdown()


def test_committed_checkpoints_load_and_match_the_recipe() -> None:
    paths = [PACKAGE_CHECKPOINTS / f"{e}.safetensors" for e in LAB_ENCODINGS]
    assert sum(p.stat().st_size for p in paths) <= 10 * 1024 * 1024
    for encoding, path in zip(LAB_ENCODINGS, paths, strict=True):
        meta = read_meta(path)
        assert meta["train"] == LAB_RECIPE.replace(encoding=encoding).to_dict()
        assert meta["encoding"]["name"] == encoding
        assert meta["result"]["steps"] == LAB_RECIPE.steps
    model, _ = load_checkpoint(paths[LAB_ENCODINGS.index("rope")])
    assert isinstance(model, TinyDecoder)
