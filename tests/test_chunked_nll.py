"""Chunked prefill with a KV cache scores what one pass scores (evaluate/nll.py), on both RoPE routes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM

from ropelab.errors import RopeConfigError
from ropelab.evaluate import nll as nll_module
from ropelab.evaluate.nll import prefill_route, token_nll
from ropelab.hf import extend

LENGTH = 200  # past the tiny model's trained 64 tokens, so every method's scaling is in play
TOL = 1e-5  # nats/token


@pytest.fixture(scope="module")
def model(tiny_model_dir: Path):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def _ids(batch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(batch)
    return torch.randint(1, 320, (batch, LENGTH), generator=generator)


# native route: none, yarn, linear; ropelab's attention route: self-extend, rerope, and the dynamic
# methods, which chunked prefill rotates at the whole pass's length
CASES = [
    ("none", {}),
    ("yarn", {"factor": 4}),
    ("linear", {"factor": 4}),
    ("self-extend", {"group": 4, "window": 16}),
    ("rerope", {"window": 16}),
    ("dynamic", {"factor": 4}),
]


@pytest.mark.parametrize(("method", "params"), CASES, ids=[c[0] for c in CASES])
def test_chunked_prefill_equals_one_pass(model, method: str, params: dict) -> None:
    extend(model, method, **params)
    try:
        native = model.__dict__["ropelab_extension"].native if method != "none" else True
        assert native == (method in ("none", "yarn", "linear"))  # both routes are covered
        for batch in (1, 2):
            ids = _ids(batch)
            whole = token_nll(model, ids)
            assert whole.shape == (batch, LENGTH - 1)
            for prefill in (50, 37):  # divides L, does not (last chunk of 15 tokens)
                chunked = token_nll(model, ids, prefill_chunk=prefill)
                diff = float((chunked - whole).abs().max())
                assert diff < TOL, (method, batch, prefill, diff)
    finally:
        extend(model, "none")


def test_dynamic_chunks_need_the_whole_length(model, monkeypatch) -> None:
    """Without the whole pass's length each chunk of ``dynamic`` is scaled for a shorter length: the
    numbers move by far more than the tolerance, which is why the attention function is told it."""
    extend(model, "dynamic", factor=4)
    try:
        ids = _ids(1)
        whole = token_nll(model, ids)
        monkeypatch.setattr(nll_module, "prefill_route", lambda _model: "plain")
        naive = token_nll(model, ids, prefill_chunk=50)
        # one pass scales every position for 200 tokens; the naive first chunk (50 < the trained 64
        # tokens) is not scaled at all
        assert float((naive - whole).abs().max()) > 100 * TOL
    finally:
        extend(model, "none")


def test_chunking_refused_where_it_would_change_the_numbers(tiny_model_dir: Path) -> None:
    hf_dynamic = AutoModelForCausalLM.from_pretrained(
        tiny_model_dir,
        dtype=torch.float32,
        rope_parameters={"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0},
    ).eval()
    ids = _ids(1)
    with pytest.raises(RopeConfigError, match="one pass"):
        token_nll(hf_dynamic, ids, prefill_chunk=50)
    token_nll(hf_dynamic, ids[:, :40], prefill_chunk=50)  # one chunk is one pass: allowed
    extend(hf_dynamic, "self-extend", rope_method="dynamic", factor=4, group=4, window=16)
    with pytest.raises(RopeConfigError, match="one pass"):
        prefill_route(hf_dynamic)
    with pytest.raises(RopeConfigError, match="prefill_chunk"):
        token_nll(hf_dynamic, ids, prefill_chunk=0)


# ------------------------------------------------------------------------ evaluation
@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i, name in enumerate(("a.txt", "b.txt")):
        (folder / name).write_text(f"document {name}: " + " ".join(f"word{j * (i + 2)}" for j in range(300)))
    return folder


def _eval(model: str, corpus: Path, out: Path, **kwargs):
    from ropelab.evaluate import evaluate_methods

    options = {"methods": "none,self-extend", "lengths": [64, 160], "docs": 2, "progress": False}
    return evaluate_methods(model, corpus=str(corpus), out=out, plots=False, **{**options, **kwargs})


def test_eval_prefill_chunk_same_numbers_recorded_not_keyed(
    tiny_model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    from ropelab.report import read_jsonl

    whole = _eval(str(tiny_model_dir), corpus, tmp_path / "whole", prefill_chunk=0)
    # both documents in one forward, each chunked: batching and chunking compose
    chunked = _eval(str(tiny_model_dir), corpus, tmp_path / "chunked", prefill_chunk=48, batch_size=2)
    assert len(whole.records) == len(chunked.records) == 2 * 2 * 2
    for a, b in zip(whole.records, chunked.records, strict=True):
        assert (a["label"], a["metric"], a["length"], a["key"]) == (
            b["label"],
            b["metric"],
            b["length"],
            b["key"],
        )
        assert abs(a["loss"] - b["loss"]) < TOL
    assert {r["prefill_chunk"] for r in chunked.records} == {48}
    assert {r["batch_size"] for r in chunked.records} == {2}
    assert {r["prefill_chunk"] for r in read_jsonl(tmp_path / "chunked" / "doc_results.jsonl")} == {48}
    # the chunk is not in the resume key: a rerun with another chunk reuses every row
    again = _eval(str(tiny_model_dir), corpus, tmp_path / "chunked", prefill_chunk=0)
    assert again.records == chunked.records
    assert len(list(read_jsonl(tmp_path / "chunked" / "doc_results.jsonl"))) == 2 * 2


def test_eval_refuses_a_chunk_that_would_change_the_numbers(
    tiny_model_dir: Path, corpus: Path, tmp_path: Path
) -> None:
    """A model whose own config is transformers' dynamic NTK: a chunk size is refused before any work."""
    import shutil

    folder = tmp_path / "dynamic-model"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "dynamic", "factor": 4.0, "rope_theta": 10000.0}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(RopeConfigError, match="one pass"):
        _eval(str(folder), corpus, tmp_path / "out", methods="none", prefill_chunk=48)
    assert not (tmp_path / "out" / "doc_results.jsonl").exists()
    assert _eval(str(folder), corpus, tmp_path / "out", methods="none").records  # one pass: fine
    with pytest.raises(RopeConfigError, match="prefill_chunk"):
        _eval(str(tiny_model_dir), corpus, tmp_path / "out", prefill_chunk=-1)


def test_prefill_for_policy() -> None:
    from ropelab.evaluate.nll import prefill_for

    assert prefill_for(None) is None and prefill_for(0) is None and prefill_for(37) == 37
    for bad in (-1, 2.5, "auto", True):
        with pytest.raises(RopeConfigError, match="prefill_chunk"):
            prefill_for(bad)


def test_cli_prefill_chunk_flag(tiny_model_dir: Path, corpus: Path, tmp_path: Path, capsys) -> None:
    from ropelab.cli import main

    argv = ["eval", "--model", str(tiny_model_dir), "--corpus", str(corpus), "--lengths", "64", "--docs", "1"]
    assert main([*argv, "--prefill-chunk", "1k", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    with pytest.raises(SystemExit) as bad:
        main([*argv, "--prefill-chunk", "many", "--out", str(tmp_path / "o")])
    assert bad.value.code == 2 and "--prefill-chunk" in capsys.readouterr().err
