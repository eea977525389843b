"""What ``ropelab finetune`` trains: a transformers causal LM or one of the lab's tiny models.

A target owns the model (unwrapped), knows how to apply a method to it at the fine-tuning length,
gives the token streams to train and evaluate on, computes logits through whatever wrapper the
engine put around the model (DDP's forward must be the one called, or gradients are not
synchronised), and saves the result in its own format:

- :class:`HFTarget` (``--model smollm2|FOLDER|FILE.gguf|HUB_ID``): the method through
  :func:`ropelab.hf.extend`; the documents of ``--corpus`` tokenised and joined with EOS; saved
  with ``save_pretrained`` so the config carries the method (``rope_parameters``, plus a
  ``ropelab`` entry that :func:`ropelab.hf.load.load_model` re-applies for the methods transformers
  does not have).
- :class:`LabTarget` (``--model lab[:ENCODING]`` or a lab ``.safetensors`` file): the lab's method
  labels (``none``, ``pi``, ``ntk``, ``yarn``, ...) at s = length / trained length, the lab's byte
  corpus and split; saved as a lab checkpoint with the method's encoding.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ropelab.errors import RopeConfigError
from ropelab.fsutil import follow_umask

#: ``ropelab finetune --method`` names for the lab model -> the lab's labels
LAB_ALIASES = {"linear": "pi", "dynamic": "dynamic-ntk", "default": "none"}


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token loss: ``logits`` ``[b, s, V]``, ``targets`` int64 ``[b, s]``.

    Per-token losses then their mean: the same operations as the lab model's own ``loss``, so the
    lab's fine-tuning numbers are unchanged by running through this path.
    """
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").mean()


def split_stream(tokens: Tensor, length: int, count: int) -> Tensor:
    """The first ``count`` non-overlapping windows of ``length + 1`` tokens: int64 ``[n, length + 1]``."""
    n = min(count, (tokens.numel() - 1) // length)
    if n < 1:
        raise RopeConfigError(
            f"the held-out text has {tokens.numel()} tokens: not one evaluation window of {length + 1}"
            " (use a larger corpus, a shorter --length, or --eval-windows 0)"
        )
    return torch.stack([tokens[i * length : i * length + length + 1].long() for i in range(n)])


class _Target:
    """What both targets share: the training loss through ``logits`` (the engine's wrapped model)."""

    def logits(self, model: nn.Module, inputs: Tensor) -> Tensor:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
        inputs, targets = batch
        return cross_entropy(self.logits(model, inputs), targets)


class LabTarget(_Target):
    """A lab model (:class:`ropelab.lab.model.TinyDecoder`) and the lab's byte corpus."""

    kind = "lab"

    def __init__(self, model: nn.Module, meta: dict[str, Any], corpus: Any, *, source: str = "lab") -> None:
        self.model = model
        self.meta = meta
        self.corpus = corpus
        self.source = source
        self.trained_length = int(meta["train"]["length"])
        self.label = "none"

    @classmethod
    def load(cls, spec: str, corpus: str = "stdlib") -> LabTarget:
        from ropelab.lab.checkpoints import PACKAGE_CHECKPOINTS, load_checkpoint
        from ropelab.lab.data import corpus_info, load_corpus

        if spec.endswith(".safetensors"):
            path = Path(spec)
        else:
            encoding = spec.partition(":")[2] or "rope"
            path = PACKAGE_CHECKPOINTS / f"{encoding}.safetensors"
            if not path.exists():
                raise RopeConfigError(f"no committed lab model {encoding!r} (looked for {path})")
        if corpus.startswith("hf:") or Path(corpus).is_file():
            raise RopeConfigError("lab models train on a folder of *.py files: --corpus stdlib or DIR")
        data = load_corpus(None if corpus == "stdlib" else corpus)
        model, meta = load_checkpoint(path, corpus_sha256=corpus_info(data)["corpus_sha256"])
        if meta["encoding"].get("name") != "rope":
            raise RopeConfigError(f"{path.name} is a {meta['encoding'].get('name')} model; methods need rope")
        return cls(model, meta, data, source=str(path))

    def apply_method(self, method: str, factor: float | None, length: int, params: dict[str, Any]) -> None:
        """Swap in the encoding of lab label ``method`` for fine-tuning at ``length``."""
        from ropelab.lab.methods import method_encoding, parse_label

        label = LAB_ALIASES.get(method, method)
        parse_label(label)
        s = length / self.trained_length
        if factor is not None and not math.isclose(factor, s, rel_tol=1e-9) and method != "none":
            raise RopeConfigError(
                f"the lab's methods use factor = length / trained length = {s:g}; drop --factor or "
                f"use --length {round(factor * self.trained_length)}"
            )
        if params:
            raise RopeConfigError(f"lab methods take no extra parameters, got {sorted(params)}")
        self.label = label
        head_dim, base = self.model.config.head_dim, float(self.meta["train"]["rope_base"])
        self.model.encoding = method_encoding(
            label, head_dim=head_dim, base=base, trained=self.trained_length, length=length
        )

    def train_tokens(self) -> Tensor:
        return self.corpus.train_tokens()

    def eval_windows(self, length: int, count: int) -> Tensor:
        """The lab's own held-out windows (of 16 T + 1 tokens), cut to ``length + 1``: the same
        text as the lab's tables score, so a run here reproduces the lab's fine-tuning numbers."""
        from ropelab.lab.data import eval_windows
        from ropelab.lab.experiment import LabConfig

        longest = self.trained_length * LabConfig().multiples[-1]
        return eval_windows(self.corpus, max(length, longest), count)[:, : length + 1]

    def logits(self, model: nn.Module, inputs: Tensor) -> Tensor:
        return model(inputs)

    def gradient_checkpointing(self) -> None:
        raise RopeConfigError("the lab's tiny models do not need (or support) gradient checkpointing")

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.source,
            "method": self.label,
            "trained_length": self.trained_length,
        }

    def save(self, folder: Path, extra: dict[str, Any], state: dict[str, Any] | None = None) -> Path:
        from ropelab.lab.checkpoints import save_checkpoint

        if state is not None:
            raise RopeConfigError("lab models are tiny: fine-tune them with --strategy ddp, not fsdp")
        meta = {k: v for k, v in self.meta.items() if k not in ("model", "encoding")}
        meta["finetune"] = {**extra, "method": self.label}
        return save_checkpoint(folder / "model.safetensors", self.model, meta, dtype=torch.float32)


class HFTarget(_Target):
    """A transformers causal LM with its tokenizer, trained on a tokenised ``--corpus``."""

    kind = "hf"

    def __init__(self, model: nn.Module, tokenizer: Any, corpus: str, *, source: str) -> None:
        from ropelab.hf.extend import model_geometry

        self.model = model
        self.tokenizer = tokenizer
        self.corpus = corpus
        self.source = source
        self.trained_length = model_geometry(model.config)["trained_length"]
        self.method: dict[str, Any] = {"method": "none"}
        self._streams: tuple[Tensor, Tensor] | None = None

    @classmethod
    def load(cls, spec: str, corpus: str = "stdlib") -> HFTarget:
        from ropelab.hf.load import load_model

        model, tokenizer = load_model(spec)
        if getattr(model, "hf_quantizer", None) is not None:
            raise RopeConfigError(f"{spec} is loaded quantised: fine-tune a float (or de-quantised) model")
        return cls(model, tokenizer, corpus, source=spec)

    def apply_method(self, method: str, factor: float | None, length: int, params: dict[str, Any]) -> None:
        from ropelab.hf.extend import extend
        from ropelab.rope.frequencies import METHODS

        kwargs = dict(params)
        takes_factor = method in METHODS and "factor" in METHODS[method].params and method != "default"
        if takes_factor:
            kwargs.setdefault(
                "factor", factor if factor is not None else max(1.0, length / self.trained_length)
            )
        elif factor is not None:
            raise RopeConfigError(f"method {method!r} does not take --factor")
        extend(self.model, method, **kwargs)
        self.method = {"method": method, **kwargs}

    def _split(self) -> tuple[Tensor, Tensor]:
        """(train, held-out) token streams: documents split by name as the lab splits files
        (about 1 in 10 held out); a corpus with no held-out document keeps its last 10% of tokens."""
        if self._streams is None:
            from ropelab.data import load_corpus
            from ropelab.lab.data import is_validation

            docs = load_corpus(self.corpus)
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

    def logits(self, model: nn.Module, inputs: Tensor) -> Tensor:
        return model(input_ids=inputs, use_cache=False).logits

    def gradient_checkpointing(self) -> None:
        self.model.config.use_cache = False
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):  # the transformers 5.x name
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "model": self.source, **self.method, "trained_length": self.trained_length}

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
            "params": self.method,
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


def load_target(spec: str, corpus: str = "stdlib") -> LabTarget | HFTarget:
    """``lab``, ``lab:ENCODING`` or ``*.safetensors``: :class:`LabTarget`; else :class:`HFTarget`."""
    if spec == "lab" or spec.startswith("lab:") or spec.endswith(".safetensors"):
        return LabTarget.load(spec, corpus)
    return HFTarget.load(spec, corpus)
