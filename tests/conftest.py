"""Shared fixtures."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random LLaMA + BPE tokenizer saved as a model folder (built once per session)."""
    pytest.importorskip("transformers")
    from hf_fixtures import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-llama"))
