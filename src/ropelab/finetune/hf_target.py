"""A transformers causal LM as a fine-tuning target (:class:`ropelab.finetune.target.Target`).

The method goes on through :func:`ropelab.hf.extend` (canonical names; ``factor`` defaults to
``length / trained length`` for the methods that take one); the documents of ``--corpus`` are
split by name (:func:`ropelab.data.is_validation`, as the lab splits its files), tokenised and
joined with EOS; the model is saved with ``save_pretrained``, so the config carries the method
(``rope_parameters``, plus a ``ropelab`` entry that :func:`ropelab.hf.load.load_model` re-applies
for the methods transformers does not have).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ropelab.data import is_validation, load_corpus, split_stream
from ropelab.errors import RopeConfigError
from ropelab.fsutil import follow_umask
from ropelab.registry import MethodSpec, entry
from ropelab.report.provenance import corpus_identity


class HFTarget:
    """A transformers causal LM with its tokenizer, trained on a tokenised ``--corpus``."""

    kind = "hf"
    grad_checkpointing_default = True

    def __init__(
        self, model: nn.Module, tokenizer: Any, corpus: str, *, source: str, model_id: str | None = None
    ) -> None:
        from ropelab.hf import model_geometry

        self.model = model
        self.tokenizer = tokenizer
        self.corpus = corpus
        self.source = source
        self.model_id = model_id
        self.trained_length = model_geometry(model.config)["trained_length"]
        self.label = "none"
        self.resolved: dict[str, Any] = {}
        #: what the saved config records under ``ropelab.params`` (re-applied on load)
        self._saved_params: dict[str, Any] = {"method": "none"}
        self._streams: tuple[Tensor, Tensor] | None = None
        self._corpus_id: dict[str, str] | None = None

    @classmethod
    def load(cls, spec: str, corpus: str = "stdlib") -> HFTarget:
        from ropelab.hf.load import load_model, model_fingerprint

        model, tokenizer = load_model(spec)
        if getattr(model, "hf_quantizer", None) is not None:
            raise RopeConfigError(f"{spec} is loaded quantised: fine-tune a float (or de-quantised) model")
        return cls(model, tokenizer, corpus, source=spec, model_id=model_fingerprint(spec))

    def apply_method(self, spec: MethodSpec, length: int) -> dict[str, Any]:
        from ropelab.hf import extend, make_extension

        if spec.multiplier != 1.0:
            raise RopeConfigError(
                f"'*A' ({spec.label}) is the lab's factor policy; for this model give the factor itself "
                "(--factor or NAME(factor=S))"
            )
        kwargs = dict(spec.params)
        if entry(spec.method).takes_factor:
            kwargs.setdefault("factor", max(1.0, length / self.trained_length))
        if spec.log_n:
            kwargs["log_n"] = True
        ext = make_extension(self.model.config, spec.method, **kwargs)
        extend(self.model, spec.method, **kwargs)
        resolved = {k: v for k, v in kwargs.items() if k != "log_n"}
        resolved.update(
            {k: getattr(ext, k) for k in ("window", "leak", "group") if getattr(ext, k) is not None}
        )
        self.label = spec.label
        self.resolved = resolved
        self._saved_params = {"method": spec.method, **kwargs}
        return resolved

    def _split(self) -> tuple[Tensor, Tensor]:
        """(train, held-out) token streams: documents split by name as the lab splits files
        (about 1 in 10 held out); a corpus with no held-out document keeps its last 10% of tokens."""
        if self._streams is None:
            docs = load_corpus(self.corpus)
            self._corpus_id = corpus_identity(self.corpus, (f"{d.name}\0{d.text}" for d in docs))
            eos = self.tokenizer.eos_token_id
            sep = [eos] if eos is not None else []
            parts: dict[bool, list[int]] = {True: [], False: []}
            for doc in docs:
                parts[is_validation(doc.name)].extend(self.tokenizer(doc.text)["input_ids"] + sep)
            train, held = parts[False], parts[True]
            if not train or not held:
                joined = train + held
                cut = int(len(joined) * 0.9)
                train, held = joined[:cut], joined[cut:]
            self._streams = (torch.tensor(train, dtype=torch.int64), torch.tensor(held, dtype=torch.int64))
        return self._streams

    def train_tokens(self) -> Tensor:
        return self._split()[0]

    def eval_windows(self, length: int, count: int) -> Tensor:
        return split_stream(self._split()[1], length, count)

    def logits(self, model: nn.Module, inputs: Tensor, positions: Tensor | None = None) -> Tensor:
        if positions is None:
            return model(input_ids=inputs, use_cache=False).logits
        # an explicit (all ones) attention mask: without one, transformers (5.x masking_utils,
        # find_packed_sequence_indices) reads every jump in position_ids as the start of another packed
        # sequence and masks attention across it, which would cut a PoSE window at its skips
        mask = torch.ones_like(inputs)
        return model(input_ids=inputs, attention_mask=mask, position_ids=positions, use_cache=False).logits

    def gradient_checkpointing(self) -> None:
        self.model.config.use_cache = False
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):  # the transformers 5.x name
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def identity(self) -> dict[str, Any]:
        self._split()
        if self.model_id is None:  # built from a model in memory: a hash of its weights
            self.model_id = _weights_fingerprint(self.model)
        return {"model_id": self.model_id, "corpus": self._corpus_id}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.source,
            "method": self.label,
            "params": self.resolved,
            "trained_length": self.trained_length,
        }

    def save(self, folder: Path, extra: dict[str, Any], state: dict[str, Any] | None = None) -> Path:
        """``save_pretrained`` into ``folder/model``: weights, tokenizer, and a config with the method.

        ``state``: the full state dict gathered from FSDP shards (else the model's own)."""
        out = folder / "model"
        model = self.model
        if hasattr(model, "activation_checkpointing_disable"):  # the transformers 5.x names
            if model.is_activation_checkpointing:
                model.activation_checkpointing_disable()
        elif getattr(model, "is_gradient_checkpointing", False):
            model.gradient_checkpointing_disable()
        model.config.use_cache = True
        model.config.ropelab = {
            **getattr(model.config, "ropelab", {}),
            "params": self._saved_params,
            "finetune": extra,
        }
        attn = model.config._attn_implementation
        original = model.__dict__.get("_ropelab_original", {}).get("attn_implementation")
        if original is not None and attn != original:  # a name registered in this process only
            model.config._attn_implementation = original
        try:
            model.save_pretrained(out, state_dict=state)
        finally:
            model.config._attn_implementation = attn
        self.tokenizer.save_pretrained(out)
        follow_umask(*out.iterdir())  # safetensors writes its weights 0600 whatever the umask
        return out


def _weights_fingerprint(model: nn.Module) -> str:
    """sha256 (16 hex digits) over the model's parameter names and bytes."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + b"\0")
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def load_hf_target(spec: str, corpus: str = "stdlib") -> HFTarget:
    """``--model smollm2|FOLDER|FILE.gguf|HUB_ID`` as a target (see :class:`HFTarget`)."""
    return HFTarget.load(spec, corpus)
