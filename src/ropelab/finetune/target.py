"""What ``ropelab finetune`` trains: the target protocol, and the loss every target shares.

A *target* owns a model (unwrapped) and everything model-specific about fine-tuning it; the job
(:mod:`ropelab.finetune.run`) knows nothing else about the model. Two implementations:

- :class:`ropelab.finetune.hf_target.HFTarget`: a transformers causal LM and a tokenised
  ``--corpus`` (the default for ``--model smollm2|FOLDER|FILE.gguf|HUB_ID``);
- ``ropelab.lab.finetune_target.LabTarget``: one of the lab's tiny byte-level models (the lab
  owns it; ``ropelab finetune --model lab`` builds it and passes it in, so that nothing here
  imports the lab).

A target is any object with the members of :class:`Target` (a structural protocol: no base class).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn
from torch.nn import functional as F

from ropelab.registry import MethodSpec


@runtime_checkable
class Target(Protocol):
    """The members ``run_finetune`` and ``train`` use.

    ``model``: the module to train (unwrapped; the engine wraps it); ``trained_length``: the
    length it was trained at (the held-out loss is split there); ``kind``: a short name for logs
    and ``run.json`` (``"hf"``, ``"lab"``); ``grad_checkpointing_default``: whether ``train`` turns
    gradient checkpointing on when the config leaves it unset.
    """

    kind: str
    model: nn.Module
    trained_length: int
    grad_checkpointing_default: bool

    def apply_method(self, spec: MethodSpec, length: int) -> dict[str, Any]:
        """Put method ``spec`` on the model for fine-tuning at ``length`` tokens; return the parameters
        it resolved to (defaults included, e.g. ``{"factor": 4.0}``), for results and ``describe``."""
        ...

    def train_tokens(self) -> Tensor:
        """The training token stream: 1-D ``[n]`` (any integer dtype)."""
        ...

    def eval_windows(self, length: int, count: int) -> Tensor:
        """At most ``count`` held-out windows: int64 ``[n, length + 1]``."""
        ...

    def logits(self, model: nn.Module, inputs: Tensor, positions: Tensor | None = None) -> Tensor:
        """``model`` (the engine's wrapped model, whose forward must be the one called) on int64
        ``inputs [b, s]`` -> logits ``[b, s, V]``. ``positions``: int64 ``[b, s]`` position ids, strictly
        increasing along each row (PoSE: :mod:`ropelab.data.pose`); None: ``0..s-1``."""
        ...

    def gradient_checkpointing(self) -> None:
        """Recompute activations in the backward pass (or raise a one-line error)."""
        ...

    def identity(self) -> dict[str, Any]:
        """What results rows say about the model and the text: ``{"model_id", "corpus"}`` (a hash of
        the model's files or weights; ``corpus`` as :func:`ropelab.report.provenance.corpus_identity`
        gives it, for the text this target trains and evaluates on)."""
        ...

    def describe(self) -> dict[str, Any]:
        """For ``run.json``: ``kind``, ``model``, ``method`` (the canonical label), ``params`` (what the
        last ``apply_method`` resolved: the results rows' ``resolved``), ``trained_length``."""
        ...

    def save(self, folder: Path, extra: dict[str, Any], state: dict[str, Any] | None = None) -> Path:
        """Save the fine-tuned model under ``folder`` with ``extra`` (the run's settings) recorded;
        ``state``: a full state dict gathered from FSDP shards (else the model's own)."""
        ...


def cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token loss: ``logits`` ``[b, s, V]``, ``targets`` int64 ``[b, s]``.

    Per-token losses then their mean: the same operations as the lab model's own ``loss``, so the
    lab's fine-tuning numbers are unchanged by running through this path.
    """
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").mean()


def target_loss(target: Target) -> Any:
    """``loss(model, batch)`` for :func:`ropelab.train.loop.run_loop`, via ``target.logits``: ``batch`` is
    (inputs, targets) or, under PoSE, (inputs, targets, position_ids), int64 ``[b, s]`` each."""

    def loss(model: nn.Module, batch: tuple[Tensor, ...]) -> Tensor:
        inputs, targets, *positions = batch
        if positions:
            return cross_entropy(target.logits(model, inputs, positions[0]), targets)
        return cross_entropy(target.logits(model, inputs), targets)

    return loss
