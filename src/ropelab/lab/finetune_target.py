"""The lab's fine-tuning target: a lab model as `ropelab finetune` (and the lab's fine-tuning) trains it.

It implements :class:`ropelab.finetune.Target` for :class:`ropelab.lab.model.TinyDecoder`: the method
is the lab's (:func:`ropelab.lab.methods.method_encoding`, the length policy s = length / trained length),
the data the lab's byte corpus and split, the held-out windows the lab's own, the saved model a lab
checkpoint with the method's encoding. ``ropelab finetune --model lab[:ENCODING]|FILE.safetensors``
builds one with :func:`load_lab_target` and passes it to :func:`ropelab.finetune.run_finetune`.

Imports: the lab modules it needs directly (checkpoints, data, methods), never ``ropelab.lab`` itself or
``ropelab.lab.experiment`` (whose fine-tuning section imports this module).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ropelab.errors import RopeConfigError
from ropelab.lab.checkpoints import PACKAGE_CHECKPOINTS, load_checkpoint, save_checkpoint
from ropelab.lab.data import Corpus, corpus_info, eval_windows, load_corpus
from ropelab.lab.methods import method_encoding, method_params, parse_label
from ropelab.registry import MethodSpec, entry
from ropelab.report.provenance import corpus_identity

#: the lab's longest evaluation length, in trained lengths (``LabConfig().multiples[-1]``): held-out
#: windows are cut from windows of this length, so a run here scores the text the lab's tables score
LAB_LONGEST_MULTIPLE = 16


def is_lab_model(spec: str) -> bool:
    """``lab``, ``lab:ENCODING`` or a ``.safetensors`` file: a lab model, not a transformers one."""
    return spec == "lab" or spec.startswith("lab:") or spec.endswith(".safetensors")


def lab_label(spec: MethodSpec) -> str:
    """The lab's label for ``spec`` (``linear`` -> ``pi``, ``ntk*4+log-n`` unchanged): the canonical name
    if the lab knows it, else the first of its registry aliases that the lab's methods accept."""
    suffix = (f"*{spec.multiplier:g}" if spec.multiplier != 1.0 else "") + ("+log-n" if spec.log_n else "")
    problem: RopeConfigError | None = None
    for name in (spec.method, *entry(spec.method).aliases):
        try:
            parse_label(name + suffix)
        except RopeConfigError as err:
            problem = problem or err
            continue
        return name + suffix
    raise RopeConfigError(f"the lab has no method {spec.label!r} ({problem})")


class LabTarget:
    """A lab model (:class:`ropelab.lab.model.TinyDecoder`), its checkpoint metadata and the lab's corpus."""

    kind = "lab"
    grad_checkpointing_default = False

    def __init__(
        self,
        model: nn.Module,
        meta: dict[str, Any],
        corpus: Corpus,
        *,
        source: str = "lab",
        corpus_name: str = "stdlib",
        model_id: str | None = None,
    ) -> None:
        self.model = model
        self.meta = meta
        self.corpus = corpus
        self.source = source
        self.corpus_name = corpus_name
        self.model_id = model_id
        self.trained_length = int(meta["train"]["length"])
        self.label = "none"
        self.spec: MethodSpec | None = None
        self.resolved: dict[str, Any] = {}

    def apply_method(self, spec: MethodSpec, length: int) -> dict[str, Any]:
        """Swap in the encoding of the lab's method for ``spec`` at fine-tuning length ``length``."""
        label = lab_label(spec)
        params = dict(spec.params)
        factor = params.pop("factor", None)
        s = length / self.trained_length
        if factor is not None and not math.isclose(factor, s * spec.multiplier, rel_tol=1e-9):
            raise RopeConfigError(
                f"the lab's methods use factor = length / trained length = {s:g}; drop --factor or "
                f"use --length {round(factor / spec.multiplier * self.trained_length)}"
            )
        if params:
            raise RopeConfigError(f"lab methods take no extra parameters, got {sorted(params)}")
        head_dim, base = self.model.config.head_dim, float(self.meta["train"]["rope_base"])
        self.model.encoding = method_encoding(
            label, head_dim=head_dim, base=base, trained=self.trained_length, length=length
        )
        policy = method_params(label, trained=self.trained_length, length=length)
        self.label, self.spec = label, spec
        self.resolved = {k: v for k, v in policy.items() if k not in ("method", "log_n")}
        return dict(self.resolved)

    def train_tokens(self) -> Tensor:
        return self.corpus.train_tokens()

    def eval_windows(self, length: int, count: int) -> Tensor:
        """The lab's own held-out windows (of 16 T + 1 tokens), cut to ``length + 1``: the same
        text as the lab's tables score, so a run here reproduces the lab's fine-tuning numbers."""
        longest = self.trained_length * LAB_LONGEST_MULTIPLE
        return eval_windows(self.corpus, max(length, longest), count)[:, : length + 1]

    def logits(self, model: nn.Module, inputs: Tensor, positions: Tensor | None = None) -> Tensor:
        return model(inputs) if positions is None else model(inputs, positions)

    def gradient_checkpointing(self) -> None:
        raise RopeConfigError("the lab's tiny models do not need (or support) gradient checkpointing")

    def identity(self) -> dict[str, Any]:
        if self.model_id is None:  # built from a model in memory: a hash of its weights
            digest = hashlib.sha256()
            for name, tensor in sorted(self.model.state_dict().items()):
                digest.update(name.encode() + b"\0")
                digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
            self.model_id = digest.hexdigest()
        return {"model_id": self.model_id, "corpus": corpus_identity(self.corpus_name, [self.corpus.digest])}

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "model": self.source,
            "method": self.spec.label if self.spec is not None else "none",
            "lab_label": self.label,
            "params": self.resolved,
            "trained_length": self.trained_length,
        }

    def save(self, folder: Path, extra: dict[str, Any], state: dict[str, Any] | None = None) -> Path:
        if state is not None:
            raise RopeConfigError("lab models are tiny: fine-tune them with --strategy ddp, not fsdp")
        meta = {k: v for k, v in self.meta.items() if k not in ("model", "encoding")}
        method = self.spec.label if self.spec is not None else "none"
        meta["finetune"] = {**extra, "method": method, "params": self.resolved}
        return save_checkpoint(folder / "model.safetensors", self.model, meta, dtype=torch.float32)


def load_lab_target(spec: str, corpus: str = "stdlib") -> LabTarget:
    """``lab`` (the committed RoPE model), ``lab:ENCODING`` or a lab ``.safetensors`` file, on the lab's
    corpus (``stdlib`` or a folder of ``*.py`` files); ``model_id`` is the checkpoint's sha256."""
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
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return LabTarget(model, meta, data, source=str(path), corpus_name=corpus, model_id=digest)
