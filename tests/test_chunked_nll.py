"""Chunked prefill with a KV cache scores what one pass scores (evaluate/nll.py), on both RoPE routes."""

from __future__ import annotations

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
