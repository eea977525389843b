"""A tiny random LLaMA with a real byte-level BPE tokenizer, saved as a model folder (no download)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

TRAINED = 64


def save_tiny_model(folder: Path, *, vocab: int = 320) -> Path:
    """A transformers model folder: config, weights and tokenizer, loadable by ``ropelab --model PATH``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

    from ropelab.data import stdlib_files

    logging.getLogger("transformers").setLevel(logging.ERROR)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab - 20,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=["<eos>"],
        show_progress=False,
    )
    tok.train_from_iterator([p.read_text(errors="replace") for p in stdlib_files()[:5]], trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>")
    config = AutoConfig.for_model(
        "llama",
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_hidden_layers=2,
        intermediate_size=96,
        vocab_size=vocab,
        max_position_embeddings=TRAINED,
        eos_token_id=0,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder
